"""A recipe's components built through the registry and checked together before anything runs: ``harness run``,
``validate`` and ``estimate`` all start here, so that what ``validate`` accepts is what ``run`` would start."""

from __future__ import annotations

from dataclasses import dataclass

from harness import prompts
from harness._evaluation.backends import BACKENDS
from harness._run.recipe import ComponentSpec, Recipe
from harness._run.registry import Registry
from harness.components import Objective, Sink, Strategy, Student, Task, Teacher


@dataclass
class Assembly:
    """The built components of one recipe (constructing them loads no model and touches no data)."""

    recipe: Recipe
    task: Task
    teacher: Teacher
    strategies: dict[str, Strategy]
    students: dict[str, Student]
    sinks: list[Sink]

    def problems(self) -> list[str]:
        """``FILE: section.key: message`` for everything that would fail after the teacher was paid: the
        components' own ``preflight`` checks, the evaluation backend's, and what a strategy with its own
        objective needs of the teacher and the students."""
        return preflight_problems(self.recipe, self.teacher, self.students, self.strategies)


def build(registry: Registry, kind: str, spec: ComponentSpec) -> object:
    return registry.build(kind, spec.kind, spec.config)


def assemble(recipe: Recipe, registry: Registry) -> Assembly:
    return Assembly(
        recipe=recipe,
        task=build(registry, "task", recipe.task),
        teacher=build(registry, "teacher", recipe.teacher),
        strategies={s.name: build(registry, "strategy", s) for s in recipe.strategies},
        students={s.name: build(registry, "student", s) for s in recipe.students},
        sinks=[build(registry, "sink", s) for s in recipe.sinks])


def bound_objective(strategy: Strategy, teacher: Teacher, recipe: Recipe,
                    spec: ComponentSpec) -> tuple[Objective | None, dict | None]:
    """The strategy's own loss, with the teacher's scorer bound when it scores new text during training; and its
    source (``TrainingContext.objective_source``), from which a launched process builds the same."""
    objective = strategy.objective()
    if objective is None:
        return None, None
    scores = any(s in objective.signals for s in ("scores", "scores_text"))
    if scores:
        objective.scorer = teacher.scorer()
    return objective, {"strategy": spec.plain(), "teacher": recipe.teacher.plain() if scores else None}


def preflight_problems(recipe: Recipe, teacher: Teacher, students: dict[str, Student],
                       strategies: dict[str, Strategy]) -> list[str]:
    """``FILE: section.key: message`` for every problem the teacher's and students' ``preflight`` report, and for
    strategies with their own objective: a student that cannot train with it, teacher signals it needs and the
    teacher does not give, a student tokenizer that is not the teacher's for token-level signals."""
    out = [f"{recipe.path}: teacher.{key}: {message}" for key, message in teacher.preflight()]
    out += [f"{recipe.path}: evaluation.{key}: {message}"
            for key, message in BACKENDS[recipe.evaluation.backend].preflight(recipe.evaluation)]
    for i, spec in enumerate(recipe.students):
        where = f"student[{i}]"
        out += [f"{recipe.path}: {where}.{key}: {message}" for key, message in students[spec.name].preflight()]
    if out:
        return out
    for i, spec in enumerate(recipe.students):  # what training would refuse, known now
        out += [f"{recipe.path}: student[{i}].{key}: {message}" for key, message in
                students[spec.name].check_training(recipe.training, list(strategies.values()))]
    for j, spec in enumerate(recipe.strategies):
        if spec.init_from and (len(list(strategies[spec.name].roles())) != 1
                               or len(list(strategies[spec.init_from].roles())) != 1):
            out.append(f"{recipe.path}: strategy[{j}].init_from: '{spec.name}' and '{spec.init_from}' must each "
                       f"train one model (strategies with several roles cannot start from another's student)")
    for j, spec in enumerate(recipe.strategies):
        objective = strategies[spec.name].objective()
        if objective is None:
            continue
        missing = [s for s in objective.signals if s not in teacher.signals()]
        if missing:
            out.append(f"{recipe.path}: teacher.kind: strategy[{j}] ('{spec.name}') trains on the teacher's "
                       f"{', '.join(missing)} signals, which this teacher does not record; with the hf or openai "
                       f"teacher set teacher.top_logprobs = 8 and teacher.prompt = \"fine_tune_cot\"")
        if recipe.training.world_size() > 1 and "scores" in objective.signals and \
                "scores" in teacher.signals() and getattr(recipe.teacher.config, "serve", ""):
            out.append(f"{recipe.path}: training.processes: strategy[{j}] ('{spec.name}') has the teacher score "
                       f"text during training, and a served teacher would start one server per training process; "
                       f"set training.processes = 1 and training.nodes = 1 for it (or use the hf teacher)")
        token_level = "topk" in objective.signals  # by token id: the student needs the teacher's vocabulary
        written = prompts.teacher_format(str(getattr(recipe.teacher.config, "prompt", "")))
        learned = getattr(strategies[spec.name], "format", None)
        if token_level and not missing and written is not None and isinstance(learned, prompts.StudentFormat) \
                and written != learned:
            name = prompts.format_name(learned)
            out.append(f"{recipe.path}: teacher.prompt: strategy[{j}] ('{spec.name}') learns the teacher's own "
                       f"tokens in its format '{name}', but the teacher writes in "
                       f"'{prompts.format_name(written)}'; set teacher.prompt = \"{name}\"")
        teacher_vocab = teacher.vocabulary() if token_level else None
        for i, student_spec in enumerate(recipe.students):
            student = students[student_spec.name]
            out += [f"{recipe.path}: student[{i}].{key}: {message}" for key, message in student.supports(objective)]
            if token_level and not missing and (teacher_vocab is None or student.vocabulary() != teacher_vocab):
                across = " or set cross_tokenizer = true on the strategy (the teacher's top-k carried onto the " \
                         "student's tokens by text)" if "cross_tokenizer" in _fields(strategies[spec.name]) else ""
                seen = "the teacher's tokenizer is not known (set teacher.tokenizer)" if teacher_vocab is None else \
                    "the student's tokenizer is another one" if student.vocabulary() else \
                    "the student's tokenizer is made at training time"
                out.append(f"{recipe.path}: student[{i}].tokenizer: strategy[{j}] ('{spec.name}') distils token "
                           f"by token id, so the student needs the teacher's vocabulary, and {seen}; set "
                           f"student.tokenizer = \"<the teacher's folder>\" (the teacher's model folder or hub "
                           f"id){across}")
    return out


def _fields(strategy) -> tuple[str, ...]:
    """The options the strategy's type declares (its ``Config``)."""
    return tuple(getattr(type(strategy).Config, "__dataclass_fields__", ()))
