"""The data stages' work, streaming: teach, filter and build (the task stage's: ``task_stage.py``) read and write
their records in bounded chunks (``harness.records``: Arrow files), so memory does not grow with the data.
``pipeline.py`` runs them in order, keyed and committed; each function here gets the stage's empty output folder
and returns its summary and record.

What each stage keeps is only what it adds: ``task/<split>.arrow`` the questions, ``teach/generations.arrow`` the
teacher's text (grouped by question, in question order), ``filter/grades.arrow`` a verdict per generation (row for
row beside the teach file, no copy of the text) and ``build-<strategy>/train.arrow`` the training pairs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from harness import answers
from harness._run.ui import Trouble
from harness._run.workers import ordered_map
from harness.components import Strategy, Task, Teacher
from harness.errors import BadInputError, RunError
from harness.generation import signal_problem
from harness.io import atomic_write_json
from harness.records import (
    EXAMPLES,
    GENERATIONS,
    GRADES,
    TRAINING,
    ChunkSizer,
    Grade,
    RecordTable,
    RecordWriter,
    _maker,
    file_digest,
    gc_paused,
    generation_bytes,
)
from harness.types import Example, GradedGeneration

CHUNK = 8192
"""The most questions handed to the teacher or a strategy in one call; fewer when their rationales are long
(``ChunkSizer``: about 64 MB of text per chunk)."""

Progress = Callable[[int], None]
Parts = list[str]


# teach ------------------------------------------------------------------------------------------------------

@dataclass
class _Taught:
    """What one chunk of the teach stage made: its generations as a record batch, and what the stage counts."""

    questions: int
    batch: pa.RecordBatch
    failed: int = 0
    weight: int = 0
    unusable: list[str] = field(default_factory=list)
    signal_size: int = 0
    signal_tokens: int = 0


def _teach_chunk(job: tuple[str, int, int], state: dict[str, Any]) -> _Taught:
    """Questions ``start`` to ``stop`` of the train file, answered by the teacher (in a worker process, or in the
    stage's own)."""
    path, start, stop = job
    with _paused_for(state["teacher"]):
        return _teach_rows(RecordTable(Path(path), EXAMPLES).rows(start, stop), state)


def _paused_for(component: Teacher | Strategy) -> contextlib.AbstractContextManager[None]:
    """The cycle collector held off for a whole chunk of a component whose work is plain computation
    (``parallel``); one that may talk to a server for hours (an API teacher) keeps it, records are converted
    with it held off all the same."""
    return gc_paused() if component.parallel else contextlib.nullcontext()


def _teach_rows(chunk: list[Example], state: dict[str, Any]) -> _Taught:
    samples = state["teacher"].generate(chunk, state["task"], state.get("progress", lambda n: None))
    if len(samples) != len(chunk):
        raise RunError(f"teacher '{state['kind']}' returned {len(samples)} results for {len(chunk)} examples")
    flat = [g for gens in samples for g in gens]
    out = _Taught(len(chunk), GENERATIONS.batch(flat))
    for i, g in enumerate(flat, 1):
        out.failed += bool(g.meta.get("error"))
        if not i % 16:  # one generation in 16 weighed (sizing chunks needs no more)
            out.weight += 16 * generation_bytes(g)
        signals = g.meta.get("signals")
        if signals and (problem := signal_problem(signals)):
            out.unusable.append(f"question {g.example_id} sample {g.sample_index}: {problem}")
        tokens = signals and (signals.get("target_ids") or signals.get("target_text"))
        if tokens:  # token-level signals beside the text
            out.signal_size += len(json.dumps(signals))
            out.signal_tokens += len(tokens)
    return out


def teach(teacher: Teacher, kind: str, task: Task, train: RecordTable[Example], out: Path,
          progress: Progress, processes: int = 1) -> tuple[Parts, dict[str, Any]]:
    """The teacher asked chunk by chunk (a list of questions per ``generate`` call, as the contract says); its
    answers written as they come, grouped by question in question order. A teacher whose ``parallel`` says so
    answers in ``processes`` worker processes, chunk by chunk, written in the same order."""
    questions = generations = failed = signal_size = signal_tokens = 0
    sizer = ChunkSizer(CHUNK)
    processes = processes if teacher.parallel else 1
    state: dict[str, Any] = {"teacher": teacher, "task": task, "kind": kind}
    if processes <= 1:
        state["progress"] = progress

    jobs = ((str(train.path), start, stop) for start, stop in sizer.spans(len(train)))
    with RecordWriter(out / "generations.arrow", GENERATIONS) as writer:
        for taught in ordered_map(_teach_chunk, jobs, state, processes, "teach"):
            generations += writer.write_batch(taught.batch)
            failed += taught.failed
            signal_size += taught.signal_size
            signal_tokens += taught.signal_tokens
            sizer.saw(taught.questions, taught.weight)
            questions += taught.questions
            if processes > 1:
                progress(taught.questions)
            if taught.unusable:  # the teacher has answered (and cached) this chunk: stop before paying for more
                unusable = taught.unusable
                raise BadInputError(
                    f"teacher '{kind}': {len(unusable)} generations carry unusable top-k signals, which would "
                    f"train a broken student: " + "; ".join(unusable[:5]) + (" ..." if len(unusable) > 5 else "")
                    + ". Fix the teacher (or its server), or set teacher.top_logprobs = 0 to train on text only; "
                      "what it answered is kept in its cache")
    summary = f"{generations} rationales for {questions} questions"
    record: dict[str, Any] = {"questions": questions, "generations": generations, "failed": failed,
                              "digest": file_digest(out / "generations.arrow")}
    if signal_tokens:
        size = signal_size / signal_tokens
        summary += f" with top-k log-probabilities ({size:.0f} bytes/token)"
        record["signal_bytes_per_token"] = round(size, 1)
    parts: Parts = [summary]
    usage = teacher.usage()
    if usage is not None:  # API teachers: requests, cache hits, tokens, cost
        record["usage"] = usage.as_dict()
        text = (f"{usage.requests} requests, {usage.cached} cached, "
                f"{usage.input_tokens:,}+{usage.output_tokens:,} tokens")
        if usage.batched:
            text += f", {usage.batched} through batches {', '.join(usage.batches)}"
        if usage.deduplicated:
            text += f", {usage.deduplicated} answered by identical requests in flight"
        if usage.cost:
            text += f", ${usage.cost:.4f}"
        if usage.endpoints:
            text += f", over {len(usage.endpoints)} servers"
        parts.append(text)
        parts += [Trouble(note) for note in usage.notes]
        for e in usage.endpoints:
            if e.get("dead"):
                parts.append(Trouble(f"{e['base_url']} stopped answering ({e['answered']} answered, {e['failed']} "
                                     f"failed): its requests went to the other servers"))
    if failed:
        record["incomplete"] = True
        parts.append(Trouble(f"{failed} failed: they are left out of training, and the next run of this recipe asks "
                             f"only them again (the rest come from the cache)"))
    return parts, record


# filter -----------------------------------------------------------------------------------------------------

@dataclass
class _Graded:
    """What one chunk of the filter stage made: its verdicts as a record batch, and what the stage counts."""

    batch: pa.RecordBatch
    questions: int
    samples: int
    correct: int
    first_correct: int
    none_correct: int


def _grade_chunk(job: tuple[Any, ...], state: dict[str, Any]) -> _Graded:
    """Questions ``q0:q1`` and their generations ``g0:g1`` graded: only ids and answers are read."""
    train, teach_dir, q0, q1, g0, g1 = job
    spec = state["spec"]
    with gc_paused():  # (no cycles: only strings and grades)
        ids, golds = RecordTable(Path(train), EXAMPLES).columns(q0, q1, "id", "answer")
        owners, texts = RecordTable(Path(teach_dir) / "generations.arrow", GENERATIONS).columns(
            g0, g1, "example_id", "answer_text")
        verdicts: list[Grade] = []
        correct = first_correct = none_correct = g = 0
        for example_id, gold in zip(ids, golds):
            any_correct, k = False, 0
            while g < len(owners) and owners[g] == example_id:
                pred = answers.extract(texts[g], spec, None)
                ok = answers.is_correct(pred, gold, spec)
                verdicts.append(Grade(pred, ok))
                correct += ok
                first_correct += ok and k == 0
                any_correct = any_correct or ok
                k, g = k + 1, g + 1
            none_correct += not any_correct
        return _Graded(GRADES.batch(verdicts), len(ids), len(texts), correct, first_correct, none_correct)


def grade(task: Task, train: RecordTable[Example], teach_dir: Path, out: Path,
          progress: Progress, processes: int = 1) -> tuple[Parts, dict[str, Any]]:
    """Every teacher answer cleansed and compared with the gold answer (the correctness filter's verdicts), chunk by
    chunk (in ``processes`` worker processes for a large run: grading is plain computation). Reads only the ids
    and answers of the task's and the teacher's files (the teach file follows the task's order)."""
    questions = samples = correct = first_correct = none_correct = 0
    jobs = ((str(train.path), str(teach_dir), *span) for span in _plan(train, teach_dir, ChunkSizer(CHUNK)))
    with RecordWriter(out / "grades.arrow", GRADES) as writer:
        for graded in ordered_map(_grade_chunk, jobs, {"spec": task.answer}, processes, "filter"):
            writer.write_batch(graded.batch)
            questions += graded.questions
            samples += graded.samples
            correct += graded.correct
            first_correct += graded.first_correct
            none_correct += graded.none_correct
            progress(graded.questions)
    report = {"questions": questions, "samples": samples, "correct_samples": correct,
              "teacher_accuracy": first_correct / questions if questions else 0.0,
              "sample_accuracy": correct / samples if samples else 0.0,
              "questions_without_correct": none_correct}
    atomic_write_json(out / "teacher_report.json", report)
    return [f"teacher accuracy {100 * report['teacher_accuracy']:.1f}%, {correct}/{samples} rationales pass the "
            f"filter, {none_correct} questions have none"], report


# build ------------------------------------------------------------------------------------------------------

def usable_generations(graded: Mapping[str, list[GradedGeneration]]) -> tuple[dict[str, list[GradedGeneration]],
                                                                                int]:
    """Teacher generations a strategy may train on: failed requests (``meta["error"]``) and empty ones (no
    rationale, no answer, no steps) never are, whatever the filter says. Returns them and how many were left out."""
    usable, left_out = {}, 0
    for example_id, gens in graded.items():
        keep = [g for g in gens if not g.generation.meta.get("error") and (
            g.generation.rationale.strip() or g.generation.answer_text.strip() or g.generation.steps)]
        left_out += len(gens) - len(keep)
        usable[example_id] = keep
    return usable, left_out


def _plan(train: RecordTable[Example], teach_dir: Path | None, sizer: ChunkSizer) -> Iterator[tuple[int, ...]]:
    """The build stage's chunks: question rows ``q0:q1`` with their generation rows ``g0:g1`` (the teach file
    holds each question's generations together, in question order), as many questions as ``sizer`` says."""
    ids = (i for batch in train.column("id") for i in batch)
    owners = iter(()) if teach_dir is None else (
        i for batch in RecordTable(teach_dir / "generations.arrow", GENERATIONS).column("example_id") for i in batch)
    pending = next(owners, None)
    q = g = 0
    while q < len(train):
        q0, g0 = q, g
        for example_id in itertools.islice(ids, sizer.size):
            q += 1
            while pending is not None and pending == example_id:
                g += 1
                pending = next(owners, None)
        if q == q0:  # the task file ended early: nothing more to plan
            break
        yield q0, q, g0, g
    if pending is not None:
        raise RunError(f"the teach stage's output names example '{pending}' out of the task's order; re-run with "
                       f"--from teach")


@dataclass
class _Built:
    """What one chunk of the build stage made: its training pairs as a record batch, and what the stage counts."""

    questions: int
    batch: pa.RecordBatch
    covered: int
    roles: dict[str, int]
    unusable: int
    weight: int
    stats: dict[str, Any]


_GRADED = _maker(GradedGeneration)


def _build_chunk(job: tuple[Any, ...], state: dict[str, Any]) -> _Built:
    """One chunk of questions with their graded generations, read from the stage files and built into training
    pairs by the strategy (in a worker process, or in the stage's own)."""
    with _paused_for(state["strategy"]):
        return _build_rows(*job, state=state)


def _build_rows(train: str, teach_dir: str | None, filter_dir: str, q0: int, q1: int, g0: int, g1: int,
                state: dict[str, Any]) -> _Built:
    strategy: Strategy = state["strategy"]
    chunk = RecordTable(Path(train), EXAMPLES).rows(q0, q1)
    graded: dict[str, list[GradedGeneration]] = {e.id: [] for e in chunk}
    weight = 0
    if teach_dir is not None and g1 > g0:
        gens = RecordTable(Path(teach_dir) / "generations.arrow", GENERATIONS).rows(g0, g1)
        verdicts = RecordTable(Path(filter_dir) / "grades.arrow", GRADES).rows(g0, g1)
        for i, (g, verdict) in enumerate(zip(gens, verdicts), g0 + 1):
            graded[g.example_id].append(_GRADED(g, verdict.prediction, verdict.correct))
            if not i % 16:  # one generation in 16 weighed
                weight += 16 * generation_bytes(g)
    usable, left_out = usable_generations(graded)
    before = dict(strategy.stats()) if state.get("worker") else {}
    rows = strategy.build(chunk, usable if strategy.uses_teacher else {}, state["task"])
    roles: dict[str, int] = {}
    for t in rows:
        roles[t.role] = roles.get(t.role, 0) + 1
    stats = {}
    if state.get("worker"):  # what this call added to the strategy's figures (summed over the chunks)
        stats = {k: v - before.get(k, 0) if _number(v) and _number(before.get(k, 0)) else v
                 for k, v in strategy.stats().items()}
    return _Built(len(chunk), TRAINING.batch(rows), len({t.example_id for t in rows}), roles, left_out, weight,
                  stats)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def build(name: str, strategy: Strategy, task: Task, train: RecordTable[Example], teach_dir: Path | None,
          filter_dir: Path, out: Path, progress: Progress, processes: int = 1) -> tuple[Parts, dict[str, Any]]:
    """The strategy's training pairs, built chunk by chunk (``Strategy.build`` gets a chunk of questions and
    their graded generations per call) and written as they come; ``teach_dir`` None: a strategy that uses no
    teacher. A strategy whose ``parallel`` says so builds in ``processes`` worker processes, chunk by chunk,
    written in the same order."""
    examples = unusable = covered = 0
    roles: dict[str, int] = {}
    processes = processes if strategy.parallel else 1
    state: dict[str, Any] = {"strategy": strategy, "task": task, "worker": processes > 1}
    sizer = ChunkSizer(CHUNK)
    merged: dict[str, Any] = {}
    jobs = ((str(train.path), teach_dir and str(teach_dir), str(filter_dir), *span)
            for span in _plan(train, teach_dir, sizer))
    with RecordWriter(out / "train.arrow", TRAINING) as writer:
        for built in ordered_map(_build_chunk, jobs, state, processes, f"build {name}"):
            examples += writer.write_batch(built.batch)
            unusable += built.unusable
            covered += built.covered
            for role, n in built.roles.items():
                roles[role] = roles.get(role, 0) + n
            for k, v in built.stats.items():
                merged[k] = merged.get(k, 0) + v if _number(v) and _number(merged.get(k, 0)) else v
            sizer.saw(built.questions, built.weight)
            progress(built.questions)
    if not examples:
        raise RunError(f"strategy '{name}' built no training examples (did the filter drop everything? "
                       f"see {filter_dir / 'teacher_report.json'})")
    summary = f"{examples} training examples from {covered} questions"
    record: dict[str, Any] = {"examples": examples, "questions": covered}
    if strategy.uses_teacher and unusable:
        record["failed_or_empty_generations"] = unusable
        summary += f" ({unusable} failed or empty teacher generations left out)"
    if sorted(roles) != [""]:
        record["roles"] = {role: roles[role] for role in sorted(roles)}
        summary += " (" + ", ".join(f"{n} {role}" for role, n in record["roles"].items()) + ")"
    parts: Parts = [Trouble(summary) if record.get("failed_or_empty_generations") else summary]
    stats = merged if processes > 1 else dict(strategy.stats())
    if stats:
        record["strategy"] = stats
        parts.append(", ".join(f"{k} {v}" for k, v in stats.items()))
    return parts, record
