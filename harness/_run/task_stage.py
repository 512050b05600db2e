"""The task stage's work: every split a task gives, written in batches to ``task/<split>.arrow``
(``harness.records``), the test questions that also occur in train or validation counted on the way; a large
generated split that can be made in parts (``GeneratedSplit.part``) made by worker processes, one part each.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from harness import answers
from harness._run.stages import CHUNK, Parts
from harness._run.ui import Trouble
from harness._run.workers import ordered_map, workers
from harness.components import Task
from harness.data import GeneratedSplit
from harness.errors import RunError
from harness.records import EXAMPLES, RecordTable, RecordWriter, chunked, gc_paused
from harness.types import Example


def split_paths(folder: Path) -> dict[str, RecordTable[Example]]:
    """A finished task stage's splits, read as they are needed."""
    return {p.stem: RecordTable(p, EXAMPLES) for p in sorted(folder.glob("*.arrow"))}


def write_splits(task: Task, kind: str, out: Path, setting: int = 1) -> tuple[Parts, dict[str, Any]]:
    """Every split the task gives (lists, or iterables it generates as they are read), written in batches; the
    test questions that also occur in train or validation are counted on the way (the test split is written
    first, so only its questions are held). A large generated split that can be made in parts
    (``GeneratedSplit.part``) is made by worker processes (``setting``: ``run.workers``), one part each, then
    joined in order."""
    splits = task.load()
    for required in ("train", "test"):
        if required not in splits:
            raise RunError(f"task '{kind}' returned no '{required}' split")
    order = sorted(splits, key=lambda name: name != "test")
    test_questions: dict[str, str] = {}
    overlap: set[str] = set()
    sizes: dict[str, int] = {}
    for name in order:
        split = splits[name]
        spans = _parts(split, workers(setting, len(split))) if name != "test" else []
        spans = spans if spans and _pickles(task) else []  # (a task is pickled only for a split made in parts)
        if spans:
            state = {"task": task, "test": test_questions, "name": name}
            jobs = [(str(out / f"{name}.part{i}.arrow"), start, stop) for i, (start, stop) in enumerate(spans)]
            with RecordWriter(out / f"{name}.arrow", EXAMPLES) as writer:
                for path, found in ordered_map(_write_part, jobs, state, len(jobs), f"task {name}"):
                    overlap.update(found)
                    with pa.OSFile(path) as f:  # read batch by batch (a map would keep the whole part resident)
                        reader = pa.ipc.open_file(f)
                        for b in range(reader.num_record_batches):
                            writer.write_batch(reader.get_batch(b))
                    Path(path).unlink()
                sizes[name] = writer.rows
            continue
        with RecordWriter(out / f"{name}.arrow", EXAMPLES) as writer:
            for chunk in _made(split):
                writer.write(chunk)
                if name == "test":
                    test_questions.update((answers.normalise_question(e.question), e.id) for e in chunk)
                elif test_questions:
                    overlap.update(_overlap(chunk, test_questions))
            sizes[name] = writer.rows
    sizes = {name: sizes[name] for name in splits}  # in the task's order
    ordered_overlap = [i for i in test_questions.values() if i in overlap]
    parts: Parts = [", ".join(f"{n} {name}" for name, n in sizes.items()) + f" ({task.source()})"]
    if ordered_overlap:
        parts.append(Trouble(f"{len(ordered_overlap)} test questions also in train/validation"))
    return parts, {"sizes": sizes, "source": task.source(), "test_overlap": ordered_overlap}


def _made(examples: Iterable[Example]) -> Iterator[list[Example]]:
    """Chunks of a split, each made (a generated split makes its examples as they are read) with the cycle
    collector held off."""
    chunks = chunked(examples, CHUNK)
    while True:
        with gc_paused():
            chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk


def _pickles(task: Task) -> bool:
    """Whether the task can be handed to a worker process (one that cannot is made in the stage's own)."""
    try:
        pickle.dumps(task)
    except Exception:  # noqa: BLE001 - whatever pickling raises, the answer is no
        return False
    return True


def _overlap(chunk: list[Example], test_questions: Mapping[str, str]) -> list[str]:
    return [test_questions[q] for e in chunk if (q := answers.normalise_question(e.question)) in test_questions]


def _parts(split: Sequence[Example], processes: int) -> list[tuple[int, int]]:
    """Spans of a generated split for ``processes`` workers, equal in cost when skipping an example costs half of
    making it (part i: ``cost - start_i / 2`` examples); none for a split made in one process."""
    total = len(split)
    if not isinstance(split, GeneratedSplit) or split.part is None or processes <= 1:
        return []
    cost = total / (2 - 2 ** (1 - processes))
    spans, start = [], 0
    for i in range(processes):
        stop = total if i == processes - 1 else min(total, start + round(cost - start / 2))
        spans.append((start, stop))
        start = stop
    return [(a, b) for a, b in spans if b > a]


def _write_part(job: tuple[str, int, int], state: dict[str, Any]) -> tuple[str, list[str]]:
    """One part of a generated split made and written to its own file (in a worker process); returns the file and
    the test questions it holds."""
    path, start, stop = job
    if "splits" not in state:  # once per worker
        state["splits"] = state["task"].load()
    split = state["splits"][state["name"]]
    found: list[str] = []
    with RecordWriter(Path(path), EXAMPLES) as writer:
        for chunk in _made(split.part(start, stop)):
            writer.write(chunk)
            found += _overlap(chunk, state["test"])
    return path, found
