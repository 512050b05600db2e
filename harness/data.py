"""Where local benchmark data lives: a recipe key, else the ``HARNESS_DATA_DIR`` environment variable."""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import DataError

DATA_ENV = "HARNESS_DATA_DIR"


def data_root(configured: str, key: str) -> Path:
    """The data root from ``configured`` (the recipe's ``key``) or ``$HARNESS_DATA_DIR``; it must exist."""
    raw = configured or os.environ.get(DATA_ENV, "")
    if not raw:
        raise DataError(f"{key}: no local data directory; set {key} in the recipe or the {DATA_ENV} environment "
                        "variable to the folder holding the benchmark files")
    root = Path(raw).expanduser()
    if not root.is_dir():
        source = key if configured else DATA_ENV
        raise DataError(f"{source}: data directory {root} does not exist")
    return root


def data_file(root: Path, relative: str, key: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise DataError(f"{key}: {path} is missing (expected under the data directory {root})")
    return path
