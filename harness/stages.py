"""What the pipeline's stages share, kept out of ``pipeline.py`` so that it reads as the stage order: the content
keys of the stages (``Keys``: every dependency between stages in one place), the teacher output a strategy may
train on, building components and running their ``preflight`` checks, and the provenance of a published result.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.components import Strategy, Student, Teacher, conform
from harness.config import as_plain
from harness.plugins import Registry
from harness.recipe import ComponentSpec, Recipe, stable_hash
from harness.types import Example, GradedGeneration, TrainingSettings


class Keys:
    """The content key of every stage: a hash of the recipe fields it reads and of the keys of the stages it reads
    from. A stage whose finished output carries the same key is skipped; a changed field re-runs exactly the
    stages below it."""

    def __init__(self, recipe: Recipe):
        self.r = recipe

    def task(self) -> str:
        return stable_hash(["task", self.r.task.plain()])

    def teach(self, task_key: str) -> str:
        return stable_hash(["teach", task_key, self.r.teacher.plain()])

    def filter(self, teach_key: str, teach_digest: str) -> str:
        """The digest of what the teacher answered: a re-run that filled in failed requests re-grades."""
        return stable_hash(["filter", teach_key, teach_digest])

    def build(self, upstream: str, strategy: ComponentSpec) -> str:
        """``upstream``: the filter's key, or the task's for strategies that use no teacher."""
        return stable_hash(["build", upstream, strategy.plain()])

    def train(self, build_key: str, role: str, student: ComponentSpec, settings: TrainingSettings) -> str:
        return stable_hash(["train", build_key, role, student.plain(),
                            training_key(settings, self.r.evaluation.max_gen_toks)])

    def evaluate(self, train_keys: list[str], task_key: str, strategy: ComponentSpec) -> str:
        return stable_hash(["evaluate", train_keys, task_key, strategy.plain(), as_plain(self.r.evaluation)])

    def publish(self, eval_key: str) -> str:
        return stable_hash(["publish", eval_key, [s.plain() for s in self.r.sinks]])


OPERATIONAL = ("threads", "checkpoint_steps", "keep_checkpoints", "logging_steps")
"""Training knobs that do not change the trained model: left out of the train stage's key."""


def training_key(settings: TrainingSettings, max_gen_toks: int | None = None) -> dict[str, Any]:
    """The training knobs that shape the model. Model selection also depends on how long its generations may be
    (``evaluation.max_gen_toks``), so that is part of the key when ``select_every`` is on."""
    key = {k: v for k, v in as_plain(settings).items() if k not in OPERATIONAL}
    if settings.select_every and max_gen_toks is not None:
        key["select_max_gen_toks"] = max_gen_toks
    return key


def validation_sample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A seeded sample of ``n`` validation examples (all of them when there are fewer), in split order."""
    if len(examples) <= n:
        return list(examples)
    keep = set(random.Random(seed).sample(range(len(examples)), n))
    return [e for i, e in enumerate(examples) if i in keep]


def file_digest(path: Path) -> str:
    """A short content hash of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def usable_generations(graded: dict[str, list[GradedGeneration]]) -> tuple[dict[str, list[GradedGeneration]], int]:
    """Teacher generations a strategy may train on: failed requests (``meta["error"]``) and empty ones (no
    rationale, no answer, no steps) never are, whatever the filter says. Returns them and how many were left out."""
    usable, left_out = {}, 0
    for example_id, gens in graded.items():
        keep = [g for g in gens if not g.generation.meta.get("error") and (
            g.generation.rationale.strip() or g.generation.answer_text.strip() or g.generation.steps)]
        left_out += len(gens) - len(keep)
        usable[example_id] = keep
    return usable, left_out


def signal_bytes_per_token(samples: list[list[Any]]) -> float | None:
    """Bytes of JSON per teacher token that token-level signals take beside the text; None without signals."""
    import json

    size = tokens = 0
    for gens in samples:
        for g in gens:
            signals = g.meta.get("signals")
            if signals and signals.get("target_ids"):
                size += len(json.dumps(signals))
                tokens += len(signals["target_ids"])
    return size / tokens if tokens else None


def bound_objective(strategy: Strategy, teacher: Teacher) -> Any:
    """The strategy's own loss, with the teacher's scorer bound when it scores new text during training."""
    objective = strategy.objective()
    if objective is not None and "scores" in objective.signals:
        objective.scorer = teacher.scorer()
    return objective


def make_component(registry: Registry, kind: str, spec: ComponentSpec) -> Any:
    """Build a recipe's component and give it the declared defaults it lacks (``harness.components.conform``)."""
    return conform(kind, registry.get(kind, spec.kind).factory(spec.config), spec.kind)


def preflight_problems(recipe: Recipe, teacher: Teacher, students: dict[str, Student],
                       strategies: dict[str, Strategy] | None = None) -> list[str]:
    """``FILE: section.key: message`` for every problem the teacher's and students' ``preflight`` report, and for
    strategies with their own objective: a student that cannot train with it, teacher signals it needs and the
    teacher does not give, a student tokenizer that is not the teacher's for token-level signals."""
    out = [f"{recipe.path}: teacher.{key}: {message}" for key, message in teacher.preflight()]
    ev = recipe.evaluation
    if ev.backend == "vllm":
        from harness.evaluate import serve_command
        from harness.serve import command_problems

        out += [f"{recipe.path}: evaluation.serve: {message}" for _, message in
                command_problems(serve_command(ev), "serve")]
    for i, spec in enumerate(recipe.students):
        where = f"student[{i}]"
        out += [f"{recipe.path}: {where}.{key}: {message}" for key, message in students[spec.name].preflight()]
    if out:
        return out
    for j, spec in enumerate(recipe.strategies):
        objective = (strategies or {})[spec.name].objective() if strategies else None
        if objective is None:
            continue
        missing = [s for s in objective.signals if s not in teacher.signals()]
        if missing:
            out.append(f"{recipe.path}: teacher.kind: strategy[{j}] ('{spec.name}') trains on the teacher's "
                       f"{', '.join(missing)} signals, which this teacher does not record; with the hf or openai "
                       f"teacher set teacher.top_logprobs = 8 and teacher.prompt = \"fine_tune_cot\"")
        token_level = "topk" in objective.signals
        teacher_vocab = teacher.vocabulary() if token_level else None
        for i, student_spec in enumerate(recipe.students):
            student = students[student_spec.name]
            out += [f"{recipe.path}: student[{i}].{key}: {message}" for key, message in student.supports(objective)]
            if token_level and not missing and (teacher_vocab is None or student.vocabulary() != teacher_vocab):
                out.append(f"{recipe.path}: student[{i}].tokenizer: strategy[{j}] ('{spec.name}') distils token "
                           f"by token, so the student needs the teacher's tokenizer (same vocabulary); set "
                           f"student.tokenizer = \"<the teacher's folder>\" (the teacher's model folder or hub id)")
    return out


def selection_validator(recipe: Recipe, strategy: Strategy, task: Any, splits: dict[str, list[Example]],
                        roles: Sequence[str]) -> Any:
    """Model selection's score: accuracy on a seeded sample of the validation split (never test)."""
    from harness.errors import BadInputError
    from harness.evaluate import make_validator

    if len(roles) > 1 or strategy.multi_call:
        raise BadInputError("training.select_every: this strategy answers through several generate calls or "
                            "models; model selection scores single-model strategies. Set "
                            "training.select_every = 0 for it")
    if not splits.get("validation"):
        raise BadInputError("training.select_every: the task has no validation split to select on; set "
                            "training.select_every = 0 or use a task with one")
    t = recipe.training
    sample = validation_sample(splits["validation"], t.select_examples, t.seed)
    return make_validator(strategy, task, sample, strategy.max_gen_toks(recipe.evaluation.max_gen_toks),
                          recipe.evaluation.batch_size)


def provenance(recipe: Recipe, manifest: dict[str, Any], run_name: str, eval_key: str,
               train_records: list[dict[str, Any]], teacher_report: dict[str, Any],
               teacher_usage: dict[str, Any], hub_dataset: str | None,
               evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a published result records about how it was made (lm-eval's results file, key ``harness``):
    ``evaluation`` is how the student was evaluated (backend, device, dtype, samples, temperature, seed...)."""
    r = recipe
    strategy_name, _, student_name = run_name.partition("+")
    strategy = next(s for s in r.strategies if s.name == strategy_name)
    student = next(s for s in r.students if s.name == student_name) if student_name else r.students[0]
    parameters = sum(rec.get("parameters") or 0 for rec in train_records)
    return {"run_name": run_name, "recipe": r.name, "recipe_hash": r.digest(), "evaluation_key": eval_key,
            "task": {"name": r.task.kind, "hub_dataset": hub_dataset, **r.task.plain()},
            "teacher": {"name": r.teacher.name, **r.teacher.plain(),
                        **({"placement": teacher_usage["placement"]} if teacher_usage.get("placement") else {})},
            "strategy": {"name": strategy.name, **strategy.plain()},
            "student": {"name": student.name, **student.plain()}, "student_parameters": parameters or None,
            "teacher_accuracy": teacher_report.get("teacher_accuracy"),
            "teacher_cost": teacher_usage.get("cost") or None,
            "training": asdict(r.training), "evaluation": evaluation or {}, "git_commit": manifest.get("git_commit"),
            "versions": manifest.get("versions"), "machine": machine_facts()}


def machine_facts() -> dict[str, Any]:
    """What numerics depend on beyond the versions: the processor, core count, torch's threads and device."""
    import os
    import platform
    import sys

    facts: dict[str, Any] = {"platform": platform.platform(), "processor": platform.machine(),
                             "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None:
        facts["torch_threads"] = torch.get_num_threads()
        facts["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return facts
