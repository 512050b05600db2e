"""The run directory: one folder per stage, written atomically, with a done-marker and a manifest.

A stage writes into ``<stage>.partial/`` and, once everything is there, renames it to ``<stage>/`` with
``done.json`` (its key, summary and timing) inside. A stage is current when ``done.json`` holds the key it would
have now; a crash leaves only a ``.partial`` folder, which the next run discards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.errors import BadInputError
from harness.io import atomic_write_json

DONE = "done.json"


# The run directory -------------------------------------------------------------------------------------------

class RunDir:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = root / "manifest.json"

    def path(self, stage: str) -> Path:
        return self.root / stage

    @contextlib.contextmanager
    def lock(self, wait: bool = False, note: Any = None) -> Iterator[None]:
        """This run folder for one ``harness run`` at a time: an exclusive lock on ``run.lock`` (released when the
        process ends, however it ends); a second run of the same recipe meanwhile is refused, naming the first, or
        with ``wait`` waits for it (and then finds its finished stages up to date)."""
        import fcntl

        handle = (self.root / "run.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if not wait:
                handle.close()
                raise BadInputError(f"{self.root}: another harness run is using this run folder ({holder}); wait "
                                    f"for it to finish (harness run --wait), or give this one another run.name or "
                                    f"run.output_dir") from None
            if note is not None:
                note(f"waiting for the harness run that holds {self.root} ({holder})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def done(self, stage: str) -> dict[str, Any] | None:
        marker = self.path(stage) / DONE
        if not marker.exists():
            return None
        try:
            return json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def is_current(self, stage: str, key: str) -> bool:
        done = self.done(stage)
        return done is not None and done.get("key") == key

    def begin(self, stage: str) -> Path:
        """A fresh ``.partial`` folder to write the stage's outputs into."""
        partial = self.root / f"{stage}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        return partial

    def commit(self, stage: str, key: str, record: dict[str, Any]) -> Path:
        """Mark the stage done and move its outputs into place (replacing stale ones)."""
        partial = self.root / f"{stage}.partial"
        atomic_write_json(partial / DONE, {"key": key, **record})
        final = self.path(stage)
        if final.exists():
            stale = self.root / f"{stage}.stale"
            if stale.exists():
                shutil.rmtree(stale)
            os.replace(final, stale)
            os.replace(partial, final)
            shutil.rmtree(stale)
        else:
            os.replace(partial, final)
        return final

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.read_manifest()
        for k, v in fields.items():
            if isinstance(v, dict) and isinstance(manifest.get(k), dict):
                manifest[k].update(v)
            else:
                manifest[k] = v
        atomic_write_json(self.manifest_path, manifest)

    def read_manifest(self) -> dict[str, Any]:
        if self.manifest_path.exists():
            return json.loads(self.manifest_path.read_text())
        return {}


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("harness", "torch", "transformers", "accelerate", "datasets", "deepspeed", "lm_eval", "pluggy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
