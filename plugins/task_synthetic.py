"""A synthetic multi-step arithmetic word-problem task, generated from a seed.

Each problem starts with a count (1-``max_start``) and applies 2-4 operations: add or take away 1-``max_operand``,
or double (only while the count is at most half of ``max_value``). Every intermediate value stays in
0-``max_value``, so each single step stays learnable for a tiny model. Wording varies (names, objects, verbs).
The problem's structure is kept in ``Example.meta`` so a program teacher can explain it.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from harness import AnswerSpec, Example, SubStep, Task, hookimpl
from harness.data import GeneratedSplit

NAMES = [("Tom", "he"), ("Anna", "she"), ("Ben", "he"), ("Lily", "she"), ("Sam", "he"), ("Mia", "she"),
         ("Jack", "he"), ("Emma", "she"), ("Leo", "he"), ("Zoe", "she")]
ITEMS = ["apples", "marbles", "stickers", "coins", "books", "cookies", "pencils", "cards", "shells", "stamps"]

START = ["{name} has {n} {items}.", "{name} starts with {n} {items}.", "There are {n} {items} in {name}'s box.",
         "{name} collected {n} {items}."]
ADD = ["{Pron} buys {x} more.", "A friend gives {name} {x} more {items}.", "Then {name} finds {x} more {items}.",
       "{Pron} gets {x} more {items}."]
SUB = ["{Pron} gives away {x}.", "{name} loses {x} of them.", "Then {x} {items} are taken away.",
       "{Pron} uses {x} {items}."]
DOUBLE = ["Then the number of {items} doubles.", "{Pron} doubles the number of {items}.",
          "{name} gets as many {items} again."]
QUESTION = ["How many {items} does {name} have now?", "How many {items} are there now?",
            "How many {items} does {name} have in the end?"]
TEMPLATES = {"add": ADD, "sub": SUB, "double": DOUBLE}


@dataclass(frozen=True)
class Config:
    train_size: int = 20000
    validation_size: int = 200
    test_size: int = 300
    seed: int = 0
    min_ops: int = 2
    max_ops: int = 4
    max_start: int = 20
    max_operand: int = 9
    max_value: int = 99

    def check(self) -> list[tuple[str, str]]:
        problems = []
        for key in ("train_size", "test_size", "min_ops", "max_start", "max_operand"):
            if getattr(self, key) < 1:
                problems.append((key, "must be at least 1"))
        if self.validation_size < 0:
            problems.append(("validation_size", "must be 0 or more"))
        if self.max_ops < self.min_ops:
            problems.append(("max_ops", f"must be at least min_ops ({self.min_ops})"))
        if self.max_value < self.max_start + self.max_operand:
            problems.append(("max_value", "must be at least max_start + max_operand"))
        return problems


def make_problem(rng: random.Random, c: Config) -> dict:
    """One problem's structure: name, pronoun, items, start value and operations with their results.

    The draws are ``rng.choice(seq)`` and ``rng.randint(a, b)`` written out as what they are
    (``seq[rng._randbelow(len(seq))]``, ``a + rng._randbelow(b - a + 1)``): the same stream, a million problems
    twice as fast (a test pins the stream)."""
    below = rng._randbelow
    name, pron = NAMES[below(len(NAMES))]
    items = ITEMS[below(len(ITEMS))]
    value = 1 + below(c.max_start)
    start = value
    ops = []
    top, operand, half = c.max_value, c.max_operand, c.max_value // 2
    for _ in range(c.min_ops + below(c.max_ops - c.min_ops + 1)):
        choices = []
        if value + 1 <= top:
            choices.append("add")
        if value >= 1:
            choices.append("sub")
        if 1 <= value <= half:
            choices.append("double")
        op = choices[below(len(choices))]
        if op == "add":
            x = 1 + below(min(operand, top - value))
            new = value + x
        elif op == "sub":
            x = 1 + below(min(operand, value))
            new = value - x
        else:
            x, new = 2, value * 2
        ops.append({"op": op, "x": x, "before": value, "after": new})
        value = new
    words = {"name": name, "Pron": pron.capitalize(), "items": items}
    sentences = [START[below(len(START))].format(n=start, **words)]
    for o in ops:
        templates = TEMPLATES[o["op"]]
        sentences.append(templates[below(len(templates))].format(x=o["x"], **words))
    sentences.append(QUESTION[below(len(QUESTION))].format(**words))
    return {"name": name, "pronoun": pron, "items": items, "start": start, "ops": ops, "answer": value,
            "question": " ".join(sentences)}


SYMBOL = {"add": "+", "sub": "-", "double": "*"}


def equation(o: dict) -> str:
    return f"{o['before']} {SYMBOL[o['op']]} {o['x']} = {o['after']}"


class SyntheticArithmetic(Task):
    """Multi-step arithmetic word problems with exact numeric answers; splits train/validation/test."""

    Config = Config
    answer = AnswerSpec(kind="number", trigger="Therefore, the answer (arabic numerals) is")

    def __init__(self, config: Config):
        self.config = config

    def source(self) -> str:
        return f"generated from seed {self.config.seed}"

    def load(self) -> dict[str, Sequence[Example]]:
        """The problems come from one seeded stream in the order test, validation, train, so that growing
        train_size never changes the other two; every question is distinct. Train is generated as it is read
        (``GeneratedSplit``: a million questions never sit in memory), replaying the stream from the seed; a part of it
        can be made on its own (the stream replayed up to it), so worker processes can share a large split."""
        c = self.config
        held = c.test_size + c.validation_size

        def problems() -> Iterator[dict]:
            rng = random.Random(c.seed)
            seen: set[bytes] = set()  # 8-byte digests of the questions made so far
            attempts, limit = 0, (held + c.train_size) * 50
            while True:
                attempts += 1
                if attempts > limit:
                    raise ValueError("cannot generate that many distinct problems with these settings")
                p = make_problem(rng, c)
                digest = hashlib.blake2b(p["question"].encode(), digest_size=8).digest()
                if digest not in seen:
                    seen.add(digest)
                    yield p

        def part(start: int, stop: int) -> Iterator[Example]:  # the problems before start replayed, not built
            stream = itertools.islice(problems(), held + start, held + min(stop, c.train_size))
            return (self._example(f"train-{i}", p) for i, p in enumerate(stream, start))

        first = list(itertools.islice(problems(), held))
        return {"train": GeneratedSplit(c.train_size, lambda: part(0, c.train_size), part),
                "validation": [self._example(f"validation-{i}", p) for i, p in enumerate(first[c.test_size:])],
                "test": [self._example(f"test-{i}", p) for i, p in enumerate(first[:c.test_size])]}

    @staticmethod
    def _example(id_: str, p: dict) -> Example:
        rationale = " ".join(f"{equation(o)}." for o in p["ops"])
        return Example(
            id=id_,
            question=p["question"],
            answer=str(p["answer"]),
            rationale=rationale,
            steps=tuple(SubStep(f"What is {o['before']} {SYMBOL[o['op']]} {o['x']}?", str(o["after"]))
                        for o in p["ops"]),
            meta={k: p[k] for k in ("name", "pronoun", "items", "start", "ops")},
        )


@hookimpl
def register_tasks(register):
    register("synthetic_arithmetic", SyntheticArithmetic)
