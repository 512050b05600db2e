"""Files that survive a crash, and the records the stages exchange as JSON (public: plugins use these).

``atomic_write_text`` / ``atomic_write_json`` never leave half a file (temp file + ``os.replace``); ``write_jsonl``
/ ``read_jsonl`` read and write JSON Lines split on ``"\\n"`` only (texts may hold U+2028 and friends). Every
writer here redacts the values of secrets the run knows of (``harness.secrets``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.secrets import redact
from harness.types import Example, Generation, GradedGeneration, SubStep, TrainingExample

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write ``text`` so that a reader never sees half a file. ``durable = False`` skips the fsync, for files
    rewritten often that need not survive a power cut (a progress report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; these are ordinary output files
        with os.fdopen(fd, "w", newline="\n") as f:
            f.write(redact(text))
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any, durable: bool = True) -> None:
    """``obj`` as indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n", durable)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line; return how many."""
    n = 0
    with path.open("w", newline="\n") as f:
        for row in rows:
            f.write(redact(json.dumps(row, ensure_ascii=False)) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON Lines file, blank lines skipped."""
    with path.open(newline="\n") as f:
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
    if not t.signals:
        del d["signals"]
    else:
        d["signals"] = dict(t.signals)
    return d


def training_from_dict(d: dict[str, Any]) -> TrainingExample:
    return TrainingExample(**{**d, "turns": tuple(tuple(pair) for pair in d.get("turns", ()))})




# Loaded on first use -----------------------------------------------------------------------------------------

class _Loaded:
    """Holds what ``load`` returns, called on first use, as ``kind`` (list or dict)."""

    def __init__(self, load: Callable[[], Any], kind: type):
        self._load, self._kind, self._items = load, kind, None

    def _get(self) -> Any:
        if self._items is None:
            self._items = self._kind(self._load())
        return self._items

    def __getitem__(self, key):
        return self._get()[key]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._get())


class LazyList(_Loaded, Sequence):
    """A list read on first use: a finished stage's output that later stages may not need (re-running only the
    evaluation of a large run reads no training data)."""

    def __init__(self, load: Callable[[], Iterable[Any]]):
        super().__init__(load, list)


class LazyMapping(_Loaded, Mapping):
    """A dict read on first use (see ``LazyList``)."""

    def __init__(self, load: Callable[[], dict]):
        super().__init__(load, dict)
