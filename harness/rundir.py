"""The run directory: one folder per stage, written atomically, with a done-marker and a manifest.

A stage writes into ``<stage>.partial/`` and, once everything is there, renames it to ``<stage>/`` with
``done.json`` (its key, summary and timing) inside. A stage is current when ``done.json`` holds the key it would
have now; a crash leaves only a ``.partial`` folder, which the next run discards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.types import Example, Generation, GradedGeneration, SubStep, TrainingExample

DONE = "done.json"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write ``text`` so that a reader never sees half a file. ``durable = False`` skips the fsync, for files
    rewritten often that need not survive a power cut (a progress report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; these are ordinary output files
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n", durable)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# Records <-> JSON --------------------------------------------------------------------------------------------

def example_to_dict(e: Example) -> dict[str, Any]:
    d = asdict(e)
    d["steps"] = [asdict(s) for s in e.steps]
    d["meta"] = dict(e.meta)
    return d


def example_from_dict(d: dict[str, Any]) -> Example:
    return Example(**{**d, "steps": tuple(SubStep(**s) for s in d.get("steps", ()))})


def graded_to_dict(g: GradedGeneration) -> dict[str, Any]:
    gen = asdict(g.generation)
    gen["steps"] = [asdict(s) for s in g.generation.steps]
    gen["meta"] = dict(g.generation.meta)
    return {"generation": gen, "prediction": g.prediction, "correct": g.correct}


def graded_from_dict(d: dict[str, Any]) -> GradedGeneration:
    gen = d["generation"]
    generation = Generation(**{**gen, "steps": tuple(SubStep(**s) for s in gen.get("steps", ()))})
    return GradedGeneration(generation, d["prediction"], d["correct"])


def training_to_dict(t: TrainingExample) -> dict[str, Any]:
    d = asdict(t)
    if not t.turns:  # most strategies: keep their rows as they were
        del d["turns"]
    return d


def training_from_dict(d: dict[str, Any]) -> TrainingExample:
    return TrainingExample(**{**d, "turns": tuple(tuple(pair) for pair in d.get("turns", ()))})


# The run directory -------------------------------------------------------------------------------------------

class RunDir:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = root / "manifest.json"

    def path(self, stage: str) -> Path:
        return self.root / stage

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
