"""Model selection during training: the student's accuracy on a seeded sample of the validation split (never
test), greedy, with the task's answer rule. The trainer calls the score every ``training.select_every`` steps and
keeps the best checkpoint."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from harness.answers import score
from harness.components import Strategy, Task
from harness.errors import BadInputError
from harness.generation import greedy_generate
from harness.types import Example, TrainingSettings

Validator = Callable[[Any, Any], float]
"""``validate(model, tokenizer) -> accuracy``."""


def validation_sample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A seeded sample of ``n`` validation examples (all of them when there are fewer), in split order."""
    if len(examples) <= n:
        return list(examples)
    keep = set(random.Random(seed).sample(range(len(examples)), n))
    return [e for i, e in enumerate(examples) if i in keep]


def make_validator(strategy: Strategy, task: Task, examples: Sequence[Example], max_new_tokens: int,
                   batch_size: int) -> Validator:
    """Accuracy of a single-model strategy's student on ``examples`` (greedy, the task's answer rule)."""
    prompts = [strategy.prompt(e) for e in examples]

    def validate(model: Any, tokenizer: Any) -> float:
        outputs = greedy_generate(model, tokenizer, prompts, max_new_tokens, batch_size, strategy.stop())
        right = [score(o, e.answer, task.answer, strategy.prediction_prefix)["acc"] for o, e in zip(outputs, examples)]
        return sum(right) / max(len(right), 1)

    return validate


def selection_validator(training: TrainingSettings, ev: Any, strategy: Strategy, task: Task,
                        validation: Sequence[Example] | None, roles: Sequence[str]) -> Validator:
    """The score model selection uses for this strategy, or a ``BadInputError`` saying why it cannot select."""
    if len(roles) > 1 or strategy.multi_call:
        raise BadInputError("training.select_every: this strategy answers through several generate calls or "
                            "models; model selection scores single-model strategies. Set "
                            "training.select_every = 0 for it")
    if not validation:
        raise BadInputError("training.select_every: the task has no validation split to select on; set "
                            "training.select_every = 0 or use a task with one")
    sample = validation_sample(validation, training.select_examples, training.seed)
    return make_validator(strategy, task, sample, strategy.max_gen_toks(ev.max_gen_toks), ev.batch_size)
