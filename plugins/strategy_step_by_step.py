"""Distilling step-by-step (Hsieh et al. 2023): one student learns two tasks from the same questions,
``predict: {x}`` -> label and ``explain: {x}`` -> rationale, with loss = alpha * label + (1 - alpha) * rationale.
Only the predict task runs at test time, so inference costs no rationale tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import Strategy, TrainingExample, hookimpl
from harness.answers import passes_filter


@dataclass(frozen=True)
class Config:
    alpha: float = 0.5
    filter: bool = True
    """Explain only with rationales whose answer is correct."""

    def check(self) -> list[tuple[str, str]]:
        return [] if 0 < self.alpha < 1 else [("alpha", "must be in (0, 1)")]


class StepByStep(Strategy):
    parallel = True  # plain computation: a large run builds chunks in worker processes

    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def prompt(self, example) -> str:
        return f"predict: {example.question} ###"

    def stop(self) -> list[str]:
        return ["###"]

    def build(self, examples, generations, task) -> list[TrainingExample]:
        # Each question gives one predict pair and (with a usable rationale) one explain pair; weights 2*alpha and
        # 2*(1-alpha) on per-pair mean losses make the expected loss alpha * label + (1 - alpha) * rationale.
        a = self.config.alpha
        out = []
        for e in examples:
            out.append(TrainingExample(e.id, self.prompt(e), f" {e.answer}", role="", weight=2 * a))
            usable = [g for g in generations.get(e.id, ()) if passes_filter(g, self.config.filter)]
            if usable:
                out.append(TrainingExample(e.id, f"explain: {e.question} ###",
                                           f" {usable[0].generation.rationale.strip()}", weight=2 * (1 - a)))
        return out


@hookimpl
def register_strategies(register):
    register("step_by_step", StepByStep)
