"""Where local benchmark data lives (a recipe key, else the ``HARNESS_DATA_DIR`` environment variable), and
reading its files so that a bad one is a ``DataError`` naming the file and record, never a traceback."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.answers import normalise_question
from harness.errors import DataError
from harness.types import Example

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


def split_overlap(splits: dict[str, list[Any]]) -> list[str]:
    """Ids of test examples whose question (``answers.normalise_question``) also occurs in train or validation."""
    seen = {normalise_question(e.question) for name in ("train", "validation") for e in splits.get(name, ())}
    return [e.id for e in splits.get("test", ()) if normalise_question(e.question) in seen]


def read_json(path: Path) -> Any:
    """A JSON file; a missing, undecodable (not UTF-8) or malformed file is a ``DataError`` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); re-save the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None


def read_jsonl(path: Path) -> list[Any]:
    """A JSON Lines file (lines split on ``"\\n"`` only); errors name the file and line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not UTF-8 text ({exc.reason}); re-save the file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {n} is not valid JSON ({exc.msg})") from None
    return rows


def check_records(path: Path, data: Any, fields: dict[str, type | tuple[type, ...]], where: str = "") -> list[dict]:
    """Check that ``data`` (read from ``path``) is a list of objects with these fields and types; return it.
    The error names the file, the record's index and the field."""
    if not isinstance(data, list):
        raise DataError(f"{path}{where}: expected a JSON list of records, got {type(data).__name__}")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(f"{path}{where}: record {i} is {type(record).__name__}, expected an object")
        for name, kind in fields.items():
            if name not in record:
                raise DataError(f"{path}{where}: record {i} has no '{name}' field")
            if not isinstance(record[name], kind):
                raise DataError(f"{path}{where}: record {i}: '{name}' is {type(record[name]).__name__}, expected "
                                f"{' or '.join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))}")
    return data


class GeneratedSplit(Sequence[Example]):
    """A split a task makes as it is read, for tasks too large to hold (``Task.load`` may return one): its
    length is known, iteration calls ``make`` afresh and streams (the pipeline reads each split once, in order),
    and indexing, which needs every example, builds them all once and keeps them.

        def load(self):
            return {"train": GeneratedSplit(self.config.train_size, self._train), "test": [...]}

    ``part(start, stop)``, if given, makes examples ``start`` to ``stop`` only (a seeded generator may replay
    its stream up to ``start`` without building those examples): a large split is then written by several worker
    processes at once, each making one part (``run.workers``; the task must pickle, and ``load`` is called again
    in each worker). Skipping is taken to cost about half of making, so earlier parts are larger.
    """

    def __init__(self, length: int, make: Callable[[], Iterator[Example]],
                 part: Callable[[int, int], Iterator[Example]] | None = None):
        self.length, self.make, self.part = length, make, part
        self._all: list[Example] | None = None

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Example]:
        return iter(self._all) if self._all is not None else self.make()

    def __getitem__(self, i):  # type: ignore[override]
        if self._all is None:
            self._all = list(self.make())
        return self._all[i]
