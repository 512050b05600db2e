"""The data that flows between stages (the interfaces components implement are in ``harness.components``).

Components talk in batches: a list in, a list out, in the same order (like lm-eval's ``LM``).
Every component class may declare a nested ``Config`` dataclass; the recipe section for that component is
validated against it (unknown keys rejected, types checked) and the instance is built as ``Component(config)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Progress = Callable[[int], None]
"""Called with the number of items just finished, so the caller can advance a progress bar."""


@dataclass(frozen=True)
class SubStep:
    """One step of a decomposition: a sub-question and its answer (Socratic CoT)."""

    question: str
    answer: str


@dataclass(frozen=True)
class Example:
    """One task example, normalised across benchmarks."""

    id: str
    question: str
    answer: str
    rationale: str | None = None
    """A gold rationale, where the benchmark has one."""
    steps: tuple[SubStep, ...] = ()
    """A gold decomposition, where the benchmark has one."""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnswerSpec:
    """How answers of a task are cleansed from text and compared (REFERENCE.md section 1).

    ``kind`` is one of ``number`` (compare as float, tolerance 1e-6), ``number_string`` (compare as
    string after removing commas), ``choice`` (letters in ``choices``), ``yesno``, ``text``.
    ``trigger`` is the Zero-shot-CoT answer trigger used by prompting teachers.
    """

    kind: str
    choices: str = ""
    trigger: str = "Therefore, the answer is"


@dataclass(frozen=True)
class Generation:
    """One teacher output for one example. ``sample_index`` is stable across runs (diverse reasoning)."""

    example_id: str
    sample_index: int
    rationale: str
    answer_text: str
    """What the teacher gave as the answer (the stage-2 completion for prompting teachers)."""
    steps: tuple[SubStep, ...] = ()
    """Sub-question / answer pairs, for teachers that decompose."""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GradedGeneration:
    """A generation with the teacher's cleansed prediction and whether it matches the gold answer."""

    generation: Generation
    prediction: str | None
    correct: bool


@dataclass(frozen=True)
class TrainingExample:
    """One supervised pair. The loss covers ``target`` (and EOS) only, never ``prompt``.

    ``turns`` extends it to a conversation in one sequence: further ``(context, target)`` pieces that follow
    ``target``, the loss on every target and never on a context, EOS after the last target only. Each target
    then sees exactly the text before it, as it would at inference, and one forward pass learns them all."""

    example_id: str
    prompt: str
    target: str
    role: str = ""
    """For strategies with several models (``Strategy.roles()``): which model learns this pair."""
    weight: float = 1.0
    """Loss weight of this pair. With any weight other than 1, each pair's mean token loss is weighted, so a
    multi-task strategy can set loss = alpha * task_a + (1 - alpha) * task_b."""
    turns: tuple[tuple[str, str], ...] = ()
    signals: Mapping[str, Any] = field(default_factory=dict)
    """What a strategy's own objective (``Strategy.objective``) receives beside the text: ``target_ids`` (the
    teacher's own tokens, EOS included: the student learns exactly these instead of the tokenized ``target``),
    ``topk_ids`` and ``topk_logprobs`` (for each of those tokens, the teacher's k most likely tokens and their
    log-probabilities), and any signal of the strategy's own: one value (or list of values) per token of
    ``target_ids``, or one number per pair. Each reaches ``Objective.loss`` as a tensor aligned with the labels
    (docs/plugins/README.md, "Objective"). Token-level signals need the teacher's tokenizer on the student."""

    def text(self) -> str:
        """The whole sequence as text: prompt, target and every turn."""
        return self.prompt + self.target + "".join(c + t for c, t in self.turns)


@dataclass(frozen=True)
class TrainingSettings:
    """The recipe's single set of training knobs, shared by every student."""

    max_steps: int = 1000
    max_tokens: int = 0
    """A budget in training tokens (prompt + target, no padding) instead of steps: the student trains for
    ceil(max_tokens / (batch_size * mean example length)) steps. 0: use max_steps."""
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine_with_min_lr"
    min_lr_ratio: float = 0.1
    adam_beta2: float = 0.98
    max_grad_norm: float = 1.0
    max_length: int = 256
    seed: int = 0
    threads: int = 0
    """CPU threads for torch; 0 keeps torch's default."""
    deepspeed_stage: int | None = None
    """ZeRO stage 0-3, or None to train without DeepSpeed."""
    deepspeed_offload: bool = False
    """Offload optimizer state to CPU (ZeRO stage 1-3)."""
    bf16: bool = False
    logging_steps: int = 50
    micro_batch_size: int = 0
    """A cap on examples per forward pass and process; the rest of ``batch_size`` becomes gradient accumulation
    (``batch_size = micro_batch_size x accumulation x processes``). 0: ``batch_size / processes``. Lower it when
    training runs out of memory: the optimisation stays the same."""
    processes: int = 1
    """Training processes (one per GPU, or CPU processes with gloo). More than 1 needs ``launcher``."""
    launcher: str = ""
    """How to start several processes: ``torchrun`` or ``deepspeed``. Empty: train in the harness's process."""
    nodes: int = 1
    """Machines training together, each running ``processes`` processes (docs/training.md, "Several nodes"):
    node 0 runs ``harness run``, every other node ``harness train RECIPE --node-rank N`` (under SLURM's ``srun``
    the rank and node 0's address come from ``SLURM_*``)."""
    master_addr: str = ""
    """Node 0's address, which the other nodes reach (torchrun's ``--master_addr``). Empty with ``nodes`` > 1:
    the first host of the SLURM job, else a recipe error."""
    master_port: int = 29500
    """The port node 0 listens on for the other nodes (``nodes`` > 1)."""
    rdzv_endpoint: str = ""
    """``HOST:PORT`` of an elastic rendezvous (torchrun ``--rdzv-backend c10d``) instead of ``master_addr``."""
    hostfile: str = ""
    """The deepspeed launcher's hostfile (``host slots=N`` per line): the launcher on node 0 starts every
    node's processes itself over ssh, so only node 0 runs the harness."""
    deepspeed_config: str = ""
    """A DeepSpeed JSON file to use instead of the one built from these knobs (relative to the recipe). Its
    ``"auto"`` values are filled from these knobs; a value that contradicts them is a recipe error."""
    checkpoint_steps: int = 0
    """Save a checkpoint (model in its native format + trainer state) every N steps; a killed run resumes from
    the latest one. 0: no checkpoints."""
    keep_checkpoints: int = 2
    """How many of the latest checkpoints to keep."""
    select_every: int = 0
    """Score the model on a sample of the validation split every N steps (greedy generation, the task's answer
    rule) and keep the best-scoring model rather than the last. 0: keep the last."""
    select_examples: int = 64
    """How many validation questions (a seeded sample) model selection scores."""

    def check(self) -> list[tuple[str, str]]:
        problems = []
        for key in ("max_steps", "batch_size", "max_length", "logging_steps"):
            if getattr(self, key) < 1:
                problems.append((key, "must be at least 1"))
        if self.max_tokens < 0:
            problems.append(("max_tokens", "must be 0 (use max_steps) or more"))
        if self.learning_rate <= 0:
            problems.append(("learning_rate", "must be positive"))
        if not 0 <= self.warmup_ratio < 1:
            problems.append(("warmup_ratio", "must be in [0, 1)"))
        if self.deepspeed_stage is not None and self.deepspeed_stage not in (0, 1, 2, 3):
            problems.append(("deepspeed_stage", f"ZeRO stage must be 0, 1, 2 or 3, got {self.deepspeed_stage}"))
        if self.deepspeed_offload and not self.deepspeed_stage:
            problems.append(("deepspeed_offload", "needs deepspeed_stage 1, 2 or 3"))
        for key in ("micro_batch_size", "checkpoint_steps", "select_every"):
            if getattr(self, key) < 0:
                problems.append((key, "must be 0 (off) or more"))
        if self.processes < 1:
            problems.append(("processes", "must be at least 1"))
        if self.nodes < 1:
            problems.append(("nodes", "must be at least 1"))
        if self.nodes > 1 and self.launcher != "torchrun" and not self.hostfile:
            problems.append(("nodes", f"{self.nodes} nodes need launcher = \"torchrun\" (a rendezvous), or the "
                                      "deepspeed launcher with a hostfile"))
        if self.hostfile and self.launcher != "deepspeed":
            problems.append(("hostfile", "a hostfile is for launcher = \"deepspeed\""))
        if self.rdzv_endpoint and ":" not in self.rdzv_endpoint:
            problems.append(("rdzv_endpoint", f"'{self.rdzv_endpoint}' is not HOST:PORT"))
        if self.keep_checkpoints < 1:
            problems.append(("keep_checkpoints", "must be at least 1"))
        if self.select_examples < 1:
            problems.append(("select_examples", "must be at least 1"))
        if self.launcher not in ("", "torchrun", "deepspeed"):
            problems.append(("launcher", f"'{self.launcher}': use \"torchrun\", \"deepspeed\" or leave it out"))
        if self.processes > 1 and not self.launcher:
            problems.append(("processes", f"{self.processes} processes need a launcher: set training.launcher = "
                                          "\"torchrun\" or \"deepspeed\""))
        if self.launcher == "deepspeed" and self.deepspeed_stage is None and not self.deepspeed_config:
            problems.append(("launcher", "the deepspeed launcher needs deepspeed_stage (0-3) or deepspeed_config"))
        if self.deepspeed_config and self.deepspeed_stage is not None:
            problems.append(("deepspeed_config", "give deepspeed_stage or deepspeed_config, not both (the file "
                                                 "sets zero_optimization.stage)"))
        world = max(1, self.processes) * max(1, self.nodes)
        per_step = world * (self.micro_batch_size or max(1, self.batch_size // world))
        if self.batch_size >= 1 and self.processes >= 1 and self.micro_batch_size >= 0 and self.batch_size % per_step:
            what = "processes x micro_batch_size" if self.nodes == 1 else "nodes x processes x micro_batch_size"
            problems.append(("batch_size", f"{self.batch_size} is not a multiple of {what} "
                                           f"= {per_step}; change batch_size or micro_batch_size"))
        return problems

    def world_size(self) -> int:
        """Training processes on every node together."""
        return self.processes * self.nodes

    def per_device_batch(self) -> int:
        return self.micro_batch_size or max(1, self.batch_size // self.world_size())

    def accumulation(self) -> int:
        return max(1, self.batch_size // (self.per_device_batch() * self.world_size()))


@dataclass(frozen=True)
class TrainingContext:
    """What the pipeline offers a student beyond the data and the knobs (``Student.train``'s ``context``);
    every field may be None, and a student may ignore any of them."""

    checkpoint_dir: Path | None = None
    """A folder that survives a crash: keep checkpoints here and resume from the latest one found."""
    validate: Callable[[Any, Any], float] | None = None
    """Scores ``(model, tokenizer)`` on the validation sample (accuracy in [0, 1]) for model selection."""
    objective: Any = None
    """The strategy's own loss (a ``harness.components.Objective``), or None for cross-entropy on the targets."""
    objective_source: Mapping[str, Any] | None = None
    """How another process builds the same ``objective``: ``{"strategy": {"kind", "config"}, "teacher": {"kind",
    "config"} or None}`` (plain values, JSON-safe). A student that trains in processes it starts passes it on, and
    each of them calls ``harness.components.build_objective(source)``."""
    node_rank: int = 0
    """Which node this process is when ``training.nodes`` > 1 (0: the one that saves the model)."""
    init_dir: Path | None = None
    """Start from the model in this folder (another strategy's trained student: a strategy's ``init_from``)
    instead of the student's own initial model; its tokenizer comes with it. A student must honour it or refuse."""
    cache_dir: Path | None = None
    """A folder of the run's that survives stage restarts, for what the student makes from its data and can
    reuse (the transformers student keeps its token ids there, by content key)."""
