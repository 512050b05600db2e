"""The gold teacher: a task's own human annotations as the teacher's output, so strategies can train on them.

For each example it gives the task's gold rationale (GSM8K's worked solutions with their ``<<calc>>``
annotations, StrategyQA's facts) and gold sub-question/answer steps (GSM8K's Socratic annotations), with the
gold answer. This is Fine-tune-CoT's gold-rationale ablation, and a teacher for tasks where no model's output is
recorded. Examples without a gold rationale get an empty one (the correctness filter keeps it, so set
``require_rationale = true``, the default, to leave them out: they are then reported as questions without a
usable rationale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness import Example, Generation, Teacher, hookimpl


@dataclass(frozen=True)
class Config:
    require_rationale: bool = True
    """Give nothing for examples without a gold rationale (rather than an empty rationale)."""
    strip_calculations: bool = False
    """Remove GSM8K's ``<<48/2=24>>`` calculator annotations from the rationale."""


class GoldTeacher(Teacher):
    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def generate(self, examples: Sequence[Example], task, progress) -> list[list[Generation]]:
        import re

        out = []
        for e in examples:
            rationale = " ".join((e.rationale or "").split())
            if self.config.strip_calculations:
                rationale = re.sub(r"<<[^>]*>>", "", rationale)
            if not rationale and self.config.require_rationale:
                out.append([Generation(e.id, 0, "", "", meta={"missing": True})])
            else:
                out.append([Generation(e.id, 0, rationale, e.answer, steps=tuple(e.steps), meta={"gold": True})])
            progress(1)
        return out


@hookimpl
def register_teachers(register):
    register("gold", GoldTeacher)
