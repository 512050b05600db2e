"""Fine-tune-CoT (Ho et al. 2022): the student learns the teacher's rationale, then the answer.

Formats (REFERENCE.md section 1):
- ``token``:   ``{question} ###`` -> `` {rationale} --> {answer}``, answer read after ``-->``;
- ``natural``: ``Q: {question}\\n\\nA: Let's think step by step.\\n\\n`` ->
  `` {rationale}\\n\\nTherefore, the answer is {answer}``, answer read after ``Therefore, the answer is``.
By default only rationales whose answer is correct are kept (the correctness filter); ``filter = false`` is the
paper's no-filter ablation. The label after the rationale is the gold answer. ``encoder_decoder = true`` gives
the encoder-decoder variant: the ``token`` prompt is the bare question (no `` ###``), the target unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness import TrainingExample, hookimpl
from harness.answers import passes_filter
from harness.components import FormattedStrategy
from harness.prompts import STUDENT_FORMATS as FORMATS


@dataclass(frozen=True)
class Config:
    format: str = "token"
    filter: bool = True
    """Keep only rationales whose final answer is correct."""
    max_samples: int = 0
    """Use at most this many rationales per question (0: all the teacher gave)."""
    encoder_decoder: bool = False
    """The encoder-decoder students' format (T5): the question alone is the encoder's input."""

    def check(self) -> list[tuple[str, str]]:
        if self.encoder_decoder and self.format != "token":
            return [("encoder_decoder", "the encoder-decoder variant is defined for format = \"token\"")]
        if self.format not in FORMATS:
            return [("format", f"unknown format '{self.format}'; choose from {', '.join(FORMATS)}")]
        if self.max_samples < 0:
            return [("max_samples", "must be 0 (all) or more")]
        return []


class FineTuneCoT(FormattedStrategy):
    """Question -> teacher rationale + answer, with the correctness filter."""

    parallel = True  # plain computation: a large run builds chunks in worker processes

    Config = Config

    def __init__(self, config: Config):
        self.config = config
        self.format = FORMATS[config.format]
        if config.encoder_decoder:
            self.format = replace(self.format, prompt="{question}", stop=())

    def build(self, examples, generations, task) -> list[TrainingExample]:
        out = []
        for e in examples:
            kept = [g for g in generations.get(e.id, ()) if passes_filter(g, self.config.filter)]
            if self.config.max_samples:
                kept = kept[: self.config.max_samples]
            out += [TrainingExample(e.id, self.prompt(e), self.format.render_target(g.generation.rationale, e.answer))
                    for g in kept]
        return out


@hookimpl
def register_strategies(register):
    register("fine_tune_cot", FineTuneCoT)
