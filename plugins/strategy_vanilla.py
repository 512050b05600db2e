"""Vanilla fine-tuning: the student learns ``{question} ###`` -> `` {answer}`` (no rationale)."""

from __future__ import annotations

from dataclasses import dataclass

from harness import Strategy, TrainingExample, hookimpl


@dataclass(frozen=True)
class Config:
    separator: str = " ###"
    """Appended to the question to form the prompt (REFERENCE.md: decoder-only students use `` ###``)."""


class Vanilla(Strategy):
    """Answer-only fine-tuning on the gold answers; needs no teacher output."""

    parallel = True  # plain computation: a large run builds chunks in worker processes

    Config = Config
    uses_teacher = False

    def __init__(self, config: Config):
        self.config = config

    def prompt(self, example) -> str:
        return f"{example.question}{self.config.separator}"

    def build(self, examples, generations, task) -> list[TrainingExample]:
        return [TrainingExample(e.id, self.prompt(e), f" {e.answer}") for e in examples]

    def stop(self) -> list[str]:
        return [self.config.separator.strip()] if self.config.separator.strip() else []


@hookimpl
def register_strategies(register):
    register("vanilla", Vanilla)
