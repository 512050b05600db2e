"""Socratic CoT (Shridhar et al. 2022): a problem decomposer and a subproblem solver, distilled from
(sub-question, answer) decompositions, that take turns at test time.

Formats (``q`` the question; earlier steps ``Q: sq_i A: a_i``):
- decomposer: ``{q} ### Q: sq_1 Q: sq_2 ... Q:`` -> `` {next sub-question}``, or `` [END]`` after the last;
- solver: ``{q} ### Q: sq_1 A: a_1 ... Q: sq_k A:`` -> `` {a_k}``.
``mode = "two_models"`` trains one model per role; ``"unified"`` trains one model on both, with the prompts
prefixed ``decompose:`` / ``solve:``. Decompositions come from the teacher (``source = "teacher"``: its
``Generation.steps``, kept when the final answer is right) or from the task's human annotations
(``source = "gold"``: ``Example.steps``, e.g. GSM8K's Socratic sub-questions; steps without answers are skipped).

``packed = true`` trains on one sequence per question and role instead of one example per turn (the loss on
every turn's target, each seeing exactly the text before it, as at inference): the same loss terms, in one
forward pass rather than one per turn, so an equal token budget covers several times more questions.
- decomposer: ``{q} ###`` -> `` Q: sq_1 Q: sq_2 ... Q: [END]`` (it learns the `` Q:`` markers too);
- solver: ``{q} ### Q: sq_1 A:`` -> `` a_1 Q:``, then `` sq_2 A:`` (context) -> `` a_2 Q:`` ... -> `` a_n``;
- unified: ``{q} ###`` -> `` Q: sq_1 A: a_1 ... Q: sq_n A: a_n Q: [END]``, the role given by the turn marker
  (`` Q:`` asks, `` A:`` answers) instead of a prefix; so the unified decomposer sees the earlier answers too.
Generated turns are cut at the next marker.

At test time the decomposer proposes a sub-question, the solver answers it, and so on until the decomposer says
``[END]`` or ``max_steps`` is reached. The output is the transcript followed by `` --> {answer}``, the answer
being the last candidate in the solver's last answer. This runs inside lm-eval as the model type
``harness-socratic``, so lm-eval's results and per-sample logs cover it like any other model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness import Strategy, SubStep, TrainingExample, hookimpl
from harness.answers import extract, passes_filter
from harness.generation import greedy_generate

END = "[END]"
ROLES = {"two_models": ("decomposer", "solver"), "unified": ("",)}


@dataclass(frozen=True)
class Config:
    mode: str = "two_models"
    source: str = "teacher"
    filter: bool = True
    max_steps: int = 8
    """Inference bound on decomposer/solver turns."""
    max_new_tokens: int = 48
    """Per generated sub-question or answer."""
    solver_context: str = "full"
    """What the solver sees of earlier turns: ``full`` (all of them) or ``last`` (the latest one only: shorter
    solver inputs, the running result still in view)."""
    packed: bool = False
    """One training sequence per question and role, the loss on every turn, instead of one example per turn."""
    solver_share: float = 0.0
    """Two models under a token budget (``training.max_tokens``): the solver's share of it, the decomposer
    training on the rest. 0: each model's share is its share of the training text."""

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.mode not in ROLES:
            problems.append(("mode", f"'{self.mode}': use \"two_models\" or \"unified\""))
        if self.source not in ("teacher", "gold"):
            problems.append(("source", f"'{self.source}': use \"teacher\" or \"gold\""))
        if self.solver_context not in ("full", "last"):
            problems.append(("solver_context", f"'{self.solver_context}': use \"full\" or \"last\""))
        if self.max_steps < 1:
            problems.append(("max_steps", "must be at least 1"))
        if not 0 <= self.solver_share < 1:
            problems.append(("solver_share", f"{self.solver_share}: a fraction between 0 and 1 (0: in proportion "
                                             "to each model's training text)"))
        if self.packed and self.solver_context != "full":
            problems.append(("packed", "a packed sequence shows the solver every earlier turn; set "
                                       "solver_context = \"full\" or packed = false"))
        return problems


def decomposer_prompt(question: str, previous: Sequence[SubStep]) -> str:
    return f"{question} ###" + "".join(f" Q: {s.question}" for s in previous) + " Q:"


def solver_prompt(question: str, previous: Sequence[SubStep], current: str, context: str = "full") -> str:
    """The solver's input: the question, the earlier turns (``context = "last"``: only the latest one, whose
    answer carries the running result) and the current sub-question."""
    shown = previous[-1:] if context == "last" else previous
    return f"{question} ###" + "".join(f" Q: {s.question} A: {s.answer}" for s in shown) + f" Q: {current} A:"


def transcript(steps: Sequence[SubStep]) -> str:
    return "".join(f" Q: {s.question} A: {s.answer}" for s in steps)


class Socratic(Strategy):
    parallel = True  # plain computation: a large run builds chunks in worker processes

    Config = Config
    prediction_prefix = "-->"
    multi_call = True

    def __init__(self, config: Config):
        self.config = config
        self.uses_teacher = config.source == "teacher"
        self.unified = config.mode == "unified"

    def roles(self) -> tuple[str, ...]:
        return ROLES[self.config.mode]

    def prompt(self, example) -> str:
        return f"{example.question} ###"

    def stop(self) -> list[str]:
        return []

    def budget_shares(self) -> dict[str, float] | None:
        share = self.config.solver_share
        return {"decomposer": 1 - share, "solver": share} if share and not self.unified else None

    def ask_prompt(self, question: str, steps: Sequence[SubStep]) -> str:
        """The decomposer's input for the next sub-question (training and inference alike)."""
        if self.unified and self.config.packed:
            return f"{question} ###{transcript(steps)} Q:"
        prompt = decomposer_prompt(question, steps)
        return f"decompose: {prompt}" if self.unified else prompt

    def answer_prompt(self, question: str, steps: Sequence[SubStep], current: str) -> str:
        """The solver's input for the current sub-question."""
        prompt = solver_prompt(question, steps, current, self.config.solver_context)
        return f"solve: {prompt}" if self.unified and not self.config.packed else prompt

    def build(self, examples, generations, task) -> list[TrainingExample]:
        out = []
        for e in examples:
            steps = self._steps(e, generations.get(e.id, ()))
            if not steps:
                continue
            if self.config.packed:
                out += self._packed(e.id, e.question, steps)
                continue
            asker, answerer = ("", "") if self.unified else ("decomposer", "solver")
            for k, step in enumerate(steps):
                out.append(TrainingExample(e.id, self.ask_prompt(e.question, steps[:k]), f" {step.question}",
                                           role=asker))
                out.append(TrainingExample(e.id, self.answer_prompt(e.question, steps[:k], step.question),
                                           f" {step.answer}", role=answerer))
            out.append(TrainingExample(e.id, self.ask_prompt(e.question, steps), f" {END}", role=asker))
        return out

    def _packed(self, example_id: str, question: str, steps: Sequence[SubStep]) -> list[TrainingExample]:
        start = f"{question} ###"
        if self.unified:
            return [TrainingExample(example_id, start, f"{transcript(steps)} Q: {END}")]
        asks = "".join(f" Q: {s.question}" for s in steps) + f" Q: {END}"
        answers = [f" {s.answer} Q:" for s in steps[:-1]] + [f" {steps[-1].answer}"]
        turns = tuple((f" {s.question} A:", a) for s, a in zip(steps[1:], answers[1:]))
        return [TrainingExample(example_id, start, asks, role="decomposer"),
                TrainingExample(example_id, f"{start} Q: {steps[0].question} A:", answers[0], role="solver",
                                turns=turns)]

    def _steps(self, example, graded) -> tuple[SubStep, ...]:
        if self.config.source == "gold":
            steps = example.steps
        else:
            usable = [g for g in graded if g.generation.steps and passes_filter(g, self.config.filter)]
            steps = usable[0].generation.steps if usable else ()
        return steps if steps and all(s.question and s.answer for s in steps) else ()

    def lm_eval_model(self, models: dict[str, tuple[Any, Any]], batch_size: int, task: Any) -> Any:
        return socratic_lm_class()(models, self, batch_size, task.answer)


@functools.cache
def socratic_lm_class() -> type:
    """lm-eval's ``LM`` subclass for Socratic inference, built on first use (importing lm-eval is slow) and
    registered as the model type ``harness-socratic``."""
    from lm_eval.api.model import LM

    class SocraticLM(LM):
        """lm-eval model type ``harness-socratic``: the decomposer/solver loop behind ``generate_until``."""

        def __init__(self, models, strategy: Socratic, batch_size: int, answer_spec):
            super().__init__()
            self.models, self.strategy, self.batch_size, self.answer_spec = models, strategy, batch_size, answer_spec

        def _role(self, role: str):
            return self.models[""] if self.strategy.unified else self.models[role]

        def _generate(self, role: str, prompts: list[str]) -> list[str]:
            model, tok = self._role(role)
            # a packed model goes on past its turn: cut at the next turn's marker
            stop = ("Q:", "A:") if role == "decomposer" else ("Q:",)
            return [t.strip() for t in greedy_generate(model, tok, prompts, self.strategy.config.max_new_tokens,
                                                       self.batch_size, stop=stop)]

        def generate_until(self, requests) -> list[str]:
            questions = [r.args[0][: -len(" ###")] if r.args[0].endswith(" ###") else r.args[0] for r in requests]
            steps: list[list[SubStep]] = [[] for _ in questions]
            active = list(range(len(questions)))
            for _ in range(self.strategy.config.max_steps):
                if not active:
                    break
                asked = self._generate("decomposer", [self.strategy.ask_prompt(questions[i], steps[i])
                                                      for i in active])
                going = [(i, q) for i, q in zip(active, asked) if q and END not in q]
                answers = self._generate("solver", [self.strategy.answer_prompt(questions[i], steps[i], q)
                                                     for i, q in going])
                for (i, q), a in zip(going, answers):
                    steps[i].append(SubStep(q, a))
                active = [i for i, _ in going]
            outputs = []
            for s in steps:
                final = extract(s[-1].answer, self.answer_spec, "\0") if s and self.answer_spec else None
                outputs.append(f"{transcript(s)} --> {final if final is not None else ''}".strip())
            return outputs

        def loglikelihood(self, requests):
            raise NotImplementedError("harness-socratic generates only (generate_until)")

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError("harness-socratic generates only (generate_until)")

    from lm_eval.api.registry import register_model

    return register_model("harness-socratic")(SocraticLM)


@hookimpl
def register_strategies(register):
    register("socratic", Socratic)
