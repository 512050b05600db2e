"""A program teacher: writes step-by-step rationales from a problem's structure, offline and for free.

It explains problems of the ``synthetic_arithmetic`` task (whose examples carry their structure in ``meta``).
Greedy decoding (temperature 0) always uses the first phrasing; with temperature > 0 each sample draws a phrasing
from a generator seeded by (seed, example id, sample index), so diverse reasoning gets really different texts
and a re-run gets the same ones. It also emits Socratic (sub-question, answer) pairs. ``error_rate`` makes a
fraction of rationales wrong on purpose (one slipped step), to exercise the correctness filter.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from harness import DataError, Example, Generation, SubStep, Teacher, hookimpl

SYMBOL = {"add": "+", "sub": "-", "double": "*"}


def _eq(o: dict, after: int) -> str:
    return f"{o['before']} {SYMBOL[o['op']]} {o['x']} = {after}"


def _equations(p: dict, results: list[int]) -> str:
    return " ".join(f"{_eq(o, r)}." for o, r in zip(p["ops"], results))


def _narrative(p: dict, results: list[int]) -> str:
    said = {"add": "{Pron} gets {x} more, so", "sub": "{Pron} loses {x}, so", "double": "The number doubles, so"}
    parts = [f"{p['name']} starts with {p['start']} {p['items']}."]
    for o, r in zip(p["ops"], results):
        lead = said[o["op"]].format(Pron=p["pronoun"].capitalize(), x=o["x"])
        parts.append(f"{lead} {_eq(o, r)}.")
    return " ".join(parts)


def _words(p: dict, results: list[int]) -> str:
    said = {"add": "Add {x} to get {r}.", "sub": "Take away {x} to get {r}.", "double": "Double it to get {r}."}
    parts = [f"Start with {p['start']}."]
    parts += [said[o["op"]].format(x=o["x"], r=r) for o, r in zip(p["ops"], results)]
    return " ".join(parts)


PHRASINGS = {"equations": _equations, "narrative": _narrative, "words": _words}
SUBQUESTION = {"add": "How many {items} are there after adding {x}?",
               "sub": "How many {items} are left after taking away {x}?",
               "double": "How many {items} are there after doubling?"}


@dataclass(frozen=True)
class Config:
    samples: int = 1
    """Rationales per question (diverse reasoning when > 1)."""
    temperature: float = 0.0
    phrasings: tuple[str, ...] = ("equations", "narrative", "words")
    error_rate: float = 0.0
    seed: int = 0
    trace_words: int = 0
    """Pad every rationale to at least this many words by re-checking its steps (``Check: 19 + 7 = 26.``), as
    long reasoning traces do: for testing the harness at the size of R1-style data. 0: no padding."""

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.samples < 1:
            problems.append(("samples", "must be at least 1"))
        if self.temperature < 0:
            problems.append(("temperature", "must be 0 or more"))
        if self.trace_words < 0:
            problems.append(("trace_words", "must be 0 (off) or more"))
        if not 0 <= self.error_rate <= 1:
            problems.append(("error_rate", "must be in [0, 1]"))
        unknown = [p for p in self.phrasings if p not in PHRASINGS]
        if unknown or not self.phrasings:
            problems.append(("phrasings", f"choose from {', '.join(PHRASINGS)} (got {list(self.phrasings)})"))
        return problems


class ProgramTeacher(Teacher):
    """Correct (or deliberately slipped) step-by-step rationales from a problem's structure."""

    parallel = True  # plain computation: a large run answers chunks in worker processes

    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def generate(self, examples: Sequence[Example], task, progress) -> list[list[Generation]]:
        out = []
        for example in examples:
            if "ops" not in example.meta:
                raise DataError(f"the program teacher explains synthetic_arithmetic problems only; example "
                                f"'{example.id}' has no problem structure. Use another teacher for this task")
            correct = _Worked(example.meta, [o["after"] for o in example.meta["ops"]], self.config.trace_words)
            out.append([self._sample(example, i, correct) for i in range(self.config.samples)])
            progress(1)
        return out

    def _sample(self, example: Example, index: int, correct: _Worked) -> Generation:
        c = self.config
        rng = random.Random(f"{c.seed}/{example.id}/{index}")
        worked = correct
        slipped = rng.random() < c.error_rate
        if slipped:  # one arithmetic slip, carried through the remaining steps
            at = rng.randrange(len(correct.results))
            delta = rng.choice([-1, 1])
            worked = _Worked(example.meta, correct.results[:at] + [r + delta for r in correct.results[at:]],
                             c.trace_words)
        phrasing = c.phrasings[0] if c.temperature == 0 else rng.choice(c.phrasings)
        return Generation(example_id=example.id, sample_index=index, rationale=worked.rationale(phrasing),
                          answer_text=str(worked.results[-1]), steps=worked.steps,
                          meta={"phrasing": phrasing, "slipped": slipped})


class _Worked:
    """One problem worked with given step results: its sub-question steps, and its rationale in each phrasing
    (made once, whichever samples ask for it)."""

    def __init__(self, p: dict, results: list[int], trace_words: int):
        self.p, self.results, self.trace_words = p, results, trace_words
        self.steps = tuple(SubStep(SUBQUESTION[o["op"]].format(items=p["items"], x=o["x"]), _eq(o, r))
                           for o, r in zip(p["ops"], results))
        self._texts: dict[str, str] = {}

    def rationale(self, phrasing: str) -> str:
        text = self._texts.get(phrasing)
        if text is None:
            p, results = self.p, self.results
            text = PHRASINGS[phrasing](p, results)
            if self.trace_words:
                checks = " ".join(f"Check: {_eq(o, r)}." for o, r in zip(p["ops"], results))
                have, per = len(text.split()), len(checks.split())
                if have < self.trace_words:
                    text += " " + " ".join([checks] * -(-(self.trace_words - have) // per))
            self._texts[phrasing] = text
        return text


@hookimpl
def register_teachers(register):
    register("program", ProgramTeacher)
