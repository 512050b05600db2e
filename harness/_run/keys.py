"""The content key of every stage (``Keys``: every dependency between stages in one place). A stage whose
finished output carries the same key is skipped; a changed field re-runs exactly the stages below it."""

from __future__ import annotations

from typing import Any

from harness._run.recipe import ComponentSpec, Recipe, stable_hash
from harness.config import as_plain
from harness.types import TrainingSettings

RECORDS_FORMAT = "arrow-1"
"""How stage records are stored (``harness.records``); part of the first stage's key, so a run folder written in
another format is re-made rather than misread (teacher answers come from the teacher's cache)."""


def code(spec: ComponentSpec) -> dict[str, str]:
    """The plugin code a stage runs (distribution, version, source hash): a changed plugin re-runs its stages
    and the ones below (the strategy's code reaches training and evaluation through the build key)."""
    return dict(spec.code)


class Keys:
    """The content key of every stage: a hash of the recipe fields it reads and of the keys of the stages it reads
    from. A stage whose finished output carries the same key is skipped; a changed field re-runs exactly the
    stages below it."""

    def __init__(self, recipe: Recipe):
        self.r = recipe

    def task(self) -> str:
        return stable_hash(["task", self.r.task.plain(), RECORDS_FORMAT, code(self.r.task)])

    def teach(self, task_key: str) -> str:
        return stable_hash(["teach", task_key, self.r.teacher.plain(), code(self.r.teacher)])

    def filter(self, teach_key: str, teach_digest: str) -> str:
        """The digest of what the teacher answered: a re-run that filled in failed requests re-grades."""
        return stable_hash(["filter", teach_key, teach_digest])

    def build(self, upstream: str, strategy: ComponentSpec) -> str:
        """``upstream``: the filter's key, or the task's for strategies that use no teacher."""
        return stable_hash(["build", upstream, strategy.plain(), code(strategy)])

    def train(self, build_key: str, role: str, student: ComponentSpec, settings: TrainingSettings,
              init_key: str | None = None) -> str:
        """``init_key``: the train key of the model it starts from (a strategy's ``init_from``)."""
        return stable_hash(["train", build_key, role, student.plain(), code(student),
                            training_key(settings, self.r.evaluation.max_gen_toks),
                            *([init_key] if init_key else [])])

    def evaluate(self, train_keys: list[str], task_key: str, strategy: ComponentSpec) -> str:
        return stable_hash(["evaluate", train_keys, task_key, strategy.plain(), as_plain(self.r.evaluation)])

    def publish(self, eval_key: str) -> str:
        return stable_hash(["publish", eval_key, [s.plain() for s in self.r.sinks], [code(s) for s in self.r.sinks]])


OPERATIONAL = ("threads", "checkpoint_steps", "keep_checkpoints", "logging_steps", "master_addr", "master_port",
               "rdzv_endpoint", "hostfile")
"""Training knobs that do not change the trained model: left out of the train stage's key."""


def training_key(settings: TrainingSettings, max_gen_toks: int | None = None) -> dict[str, Any]:
    """The training knobs that shape the model. Model selection also depends on how long its generations may be
    (``evaluation.max_gen_toks``), so that is part of the key when ``select_every`` is on."""
    key = {k: v for k, v in as_plain(settings).items() if k not in OPERATIONAL}
    if settings.select_every and max_gen_toks is not None:
        key["select_max_gen_toks"] = max_gen_toks
    return key
