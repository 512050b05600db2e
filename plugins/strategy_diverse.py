"""Diverse reasoning (Ho et al. 2022): Fine-tune-CoT on D sampled rationales per question instead of one.

The teacher must sample at least D rationales per question (``teacher.samples``, temperature > 0; the paper uses
0.7 and D up to 64). The first D samples of each question are filtered for correctness, duplicates (the same
rationale text) are dropped, and the counts actually kept are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import TrainingExample, hookimpl
from harness.answers import passes_filter
from harness.components import FormattedStrategy
from harness.prompts import STUDENT_FORMATS as FORMATS


@dataclass(frozen=True)
class Config:
    samples: int = 8
    """D: rationales used per question."""
    format: str = "token"
    filter: bool = True
    deduplicate: bool = True

    def check(self) -> list[tuple[str, str]]:
        if self.samples < 1:
            return [("samples", "must be at least 1")]
        if self.format not in FORMATS:
            return [("format", f"unknown format '{self.format}'; choose from {', '.join(FORMATS)}")]
        return []


class DiverseReasoning(FormattedStrategy):
    """Fine-tune-CoT's format on the first D samples of each question."""

    parallel = True  # plain computation: a large run builds chunks in worker processes

    Config = Config

    def __init__(self, config: Config):
        self.config = config
        self.format = FORMATS[config.format]
        self._stats: dict[str, int] = {}

    def build(self, examples, generations, task) -> list[TrainingExample]:
        out: list[TrainingExample] = []
        offered = wrong = duplicates = 0
        for e in examples:
            seen: set[str] = set()
            for g in sorted(generations.get(e.id, ()), key=lambda g: g.generation.sample_index)[: self.config.samples]:
                offered += 1
                rationale = g.generation.rationale.strip()
                if not passes_filter(g, self.config.filter):
                    wrong += 1
                    continue
                if self.config.deduplicate and " ".join(rationale.split()) in seen:
                    duplicates += 1
                    continue
                seen.add(" ".join(rationale.split()))
                out.append(TrainingExample(e.id, self.prompt(e), self.format.render_target(rationale, e.answer)))
        counts = {"offered": offered, "wrong": wrong, "duplicates": duplicates, "kept": len(out)}
        self._stats = {k: self._stats.get(k, 0) + n for k, n in counts.items()}  # build is called once per chunk
        return out

    def stats(self) -> dict[str, int]:
        return dict(self._stats)


@hookimpl
def register_strategies(register):
    register("diverse_reasoning", DiverseReasoning)
