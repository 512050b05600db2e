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

from dataclasses import dataclass

from harness import TrainingExample, hookimpl

FORMATS = {
    "token": ("{question} ###", " {rationale} --> {answer}", "-->", ["###"]),
    "natural": ("Q: {question}\n\nA: Let's think step by step.\n\n",
                " {rationale}\n\nTherefore, the answer is {answer}", "Therefore, the answer is", ["\n\nQ:"]),
}


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


class FineTuneCoT:
    """Question -> teacher rationale + answer, with the correctness filter."""

    Config = Config
    uses_teacher = True

    def __init__(self, config: Config):
        self.config = config
        self._prompt, self._target, self.prediction_prefix, self._stop = FORMATS[config.format]
        if config.encoder_decoder:
            self._prompt, self._stop = "{question}", []

    def prompt(self, example) -> str:
        return self._prompt.format(question=example.question)

    def build(self, examples, generations, task) -> list[TrainingExample]:
        out = []
        for e in examples:
            kept = [g for g in generations.get(e.id, ()) if g.correct or not self.config.filter]
            if self.config.max_samples:
                kept = kept[: self.config.max_samples]
            for g in kept:
                target = self._target.format(rationale=g.generation.rationale.strip(), answer=e.answer)
                out.append(TrainingExample(e.id, self.prompt(e), target))
        return out

    def stop(self) -> list[str]:
        return list(self._stop)


@hookimpl
def register_strategies(register):
    register("fine_tune_cot", FineTuneCoT)
