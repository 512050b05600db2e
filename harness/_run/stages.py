"""The data stages' work, streaming: task, teach, filter and build read and write their records in bounded chunks
(``harness.records``: Arrow files), so memory does not grow with the data. ``pipeline.py`` runs them in order,
keyed and committed; each function here gets the stage's empty output folder and returns its summary and record.

What each stage keeps is only what it adds: ``task/<split>.arrow`` the questions, ``teach/generations.arrow`` the
teacher's text (grouped by question, in question order), ``filter/grades.arrow`` a verdict per generation (row for
row beside the teach file, no copy of the text) and ``build-<strategy>/train.arrow`` the training pairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness import answers
from harness._run.ui import Trouble
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
    chunked,
    file_digest,
    generation_bytes,
)
from harness.types import Example, Generation, GradedGeneration

CHUNK = 8192
"""The most questions handed to the teacher or a strategy in one call; fewer when their rationales are long
(``ChunkSizer``: about 64 MB of text per chunk)."""

Progress = Callable[[int], None]
Parts = list[str]


def split_paths(folder: Path) -> dict[str, RecordTable[Example]]:
    """A finished task stage's splits, read as they are needed."""
    return {p.stem: RecordTable(p, EXAMPLES) for p in sorted(folder.glob("*.arrow"))}


# task -------------------------------------------------------------------------------------------------------

def write_splits(task: Task, kind: str, out: Path) -> tuple[Parts, dict[str, Any]]:
    """Every split the task gives (lists, or iterables it generates as they are read), written in batches; the
    test questions that also occur in train or validation are counted on the way (the test split is written
    first, so only its questions are held)."""
    splits = task.load()
    for required in ("train", "test"):
        if required not in splits:
            raise RunError(f"task '{kind}' returned no '{required}' split")
    order = sorted(splits, key=lambda name: name != "test")
    test_questions: dict[str, str] = {}
    overlap: set[str] = set()
    sizes: dict[str, int] = {}
    for name in order:
        with RecordWriter(out / f"{name}.arrow", EXAMPLES) as writer:
            for chunk in chunked(splits[name], CHUNK):
                writer.write(chunk)
                if name == "test":
                    test_questions.update((answers.normalise_question(e.question), e.id) for e in chunk)
                elif name in ("train", "validation") and test_questions:
                    overlap.update(test_questions[q] for e in chunk
                                   if (q := answers.normalise_question(e.question)) in test_questions)
            sizes[name] = writer.rows
    sizes = {name: sizes[name] for name in splits}  # in the task's order
    ordered_overlap = [i for i in test_questions.values() if i in overlap]
    parts: Parts = [", ".join(f"{n} {name}" for name, n in sizes.items()) + f" ({task.source()})"]
    if ordered_overlap:
        parts.append(Trouble(f"{len(ordered_overlap)} test questions also in train/validation"))
    return parts, {"sizes": sizes, "source": task.source(), "test_overlap": ordered_overlap}


# teach ------------------------------------------------------------------------------------------------------

def teach(teacher: Teacher, kind: str, task: Task, train: RecordTable[Example], out: Path,
          progress: Progress) -> tuple[Parts, dict[str, Any]]:
    """The teacher asked chunk by chunk (a list of questions per ``generate`` call, as the contract says); its
    answers written as they come, grouped by question in question order."""
    questions = generations = failed = signal_size = signal_tokens = weighed = 0
    unusable: list[str] = []
    sizer = ChunkSizer(CHUNK)
    with RecordWriter(out / "generations.arrow", GENERATIONS) as writer:
        for chunk in sizer.chunks(train):
            samples = teacher.generate(chunk, task, progress)
            if len(samples) != len(chunk):
                raise RunError(f"teacher '{kind}' returned {len(samples)} results for {len(chunk)} examples")
            weight = 0
            for gens in samples:
                writer.write(gens)
                generations += len(gens)
                for g in gens:
                    failed += bool(g.meta.get("error"))
                    weighed += 1
                    if not weighed % 16:  # one generation in 16 weighed (sizing chunks needs no more)
                        weight += 16 * generation_bytes(g)
                    signals = g.meta.get("signals")
                    if signals and (problem := signal_problem(signals)):
                        unusable.append(f"question {g.example_id} sample {g.sample_index}: {problem}")
                    tokens = signals and (signals.get("target_ids") or signals.get("target_text"))
                    if tokens:  # token-level signals beside the text
                        signal_size += len(json.dumps(signals))
                        signal_tokens += len(tokens)
            sizer.saw(len(chunk), weight)
            questions += len(chunk)
            if unusable:  # the teacher has answered (and cached) this chunk: stop before paying for more
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

def grade(task: Task, train: RecordTable[Example], teach_dir: Path, out: Path,
          progress: Progress) -> tuple[Parts, dict[str, Any]]:
    """Every teacher answer cleansed and compared with the gold answer (the correctness filter's verdicts). Reads
    only the ids and answers of the task's and the teacher's files, in step (the teach file follows the task's
    order)."""
    spec = task.answer
    generated = _columns(RecordTable(teach_dir / "generations.arrow", GENERATIONS), "example_id", "answer_text")
    pending = next(generated, None)
    samples = correct = questions = first_correct = none_correct = 0
    verdicts: list[Grade] = []
    with RecordWriter(out / "grades.arrow", GRADES) as writer:
        for example_id, gold in _columns(train, "id", "answer"):
            questions += 1
            any_correct, k = False, 0
            while pending is not None and pending[0] == example_id:
                pred = answers.extract(pending[1], spec, None)
                ok = answers.is_correct(pred, gold, spec)
                verdicts.append(Grade(pred, ok))
                correct += ok
                first_correct += ok and k == 0
                any_correct = any_correct or ok
                k += 1
                pending = next(generated, None)
            samples += k
            none_correct += not any_correct
            if len(verdicts) >= CHUNK:
                writer.write(verdicts)
                verdicts = []
            progress(1)
        writer.write(verdicts)
    if pending is not None:
        raise RunError(f"the teach stage's output names example '{pending[0]}' out of the task's order; re-run "
                       f"with --from teach")
    report = {"questions": questions, "samples": samples, "correct_samples": correct,
              "teacher_accuracy": first_correct / questions if questions else 0.0,
              "sample_accuracy": correct / samples if samples else 0.0,
              "questions_without_correct": none_correct}
    atomic_write_json(out / "teacher_report.json", report)
    return [f"teacher accuracy {100 * report['teacher_accuracy']:.1f}%, {correct}/{samples} rationales pass the "
            f"filter, {none_correct} questions have none"], report


def _columns(table: RecordTable[Any], *names: str) -> Iterator[tuple[Any, ...]]:
    """Rows of a few columns, streamed batch by batch (no records built)."""
    for values in zip(*(table.column(n) for n in names)):
        yield from zip(*values)


def graded_chunks(train: RecordTable[Example], teach_dir: Path, filter_dir: Path,
                  size: int = CHUNK) -> Iterator[tuple[list[Example], dict[str, list[GradedGeneration]]]]:
    """The train questions at most ``size`` at a time (fewer when their generations are long: ``ChunkSizer``),
    each chunk with its graded generations, read in step from the teach and filter files."""
    pairs = zip(RecordTable(teach_dir / "generations.arrow", GENERATIONS),
                RecordTable(filter_dir / "grades.arrow", GRADES))
    pending: tuple[Generation, Grade] | None = next(pairs, None)
    sizer = ChunkSizer(size)
    seen = 0
    for chunk in sizer.chunks(train):
        graded: dict[str, list[GradedGeneration]] = {}
        weight = 0
        for e in chunk:
            mine = graded.setdefault(e.id, [])
            while pending is not None and pending[0].example_id == e.id:
                g, verdict = pending
                mine.append(GradedGeneration(g, verdict.prediction, verdict.correct))
                seen += 1
                if not seen % 16:  # one generation in 16 weighed
                    weight += 16 * generation_bytes(g)
                pending = next(pairs, None)
        sizer.saw(len(chunk), weight)
        yield chunk, graded


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


def build(name: str, strategy: Strategy, task: Task, chunks: Iterable[tuple[list[Example], Mapping]], out: Path,
          filter_dir: Path, progress: Progress) -> tuple[Parts, dict[str, Any]]:
    """The strategy's training pairs, built chunk by chunk (``Strategy.build`` gets a chunk of questions and
    their generations per call) and written as they come."""
    examples = unusable = covered = 0
    roles: dict[str, int] = {}
    with RecordWriter(out / "train.arrow", TRAINING) as writer:
        for chunk, graded in chunks:
            usable, left_out = usable_generations(graded)
            unusable += left_out
            rows = strategy.build(chunk, usable if strategy.uses_teacher else {}, task)
            writer.write(rows)
            examples += len(rows)
            covered += len({t.example_id for t in rows})
            for t in rows:
                roles[t.role] = roles.get(t.role, 0) + 1
            progress(len(chunk))
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
    stats = dict(strategy.stats())
    if stats:
        record["strategy"] = stats
        parts.append(", ".join(f"{k} {v}" for k, v in stats.items()))
    return parts, record
