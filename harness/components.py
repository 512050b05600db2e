"""The interfaces components implement: one base class per kind, every optional member declared with its default.

A plugin's component subclasses one of these (``class MyStrategy(harness.Strategy)``) and overrides what it
needs; the pipeline calls the members directly and never probes for them. A component that does not subclass
keeps working (duck typing): :func:`conform` gives it the base class's default for every optional member it
lacks, once, when the pipeline builds it. Required members (``Teacher.generate``, ``Strategy.build``, ...) have
no default: a component without one is refused with a message naming it.

Components talk in batches: a list in, a list out, in the same order (like lm-eval's ``LM``). Every component
class may declare a nested ``Config`` dataclass; the recipe section is validated against it and the component is
built as ``Component(config)``.

About 440 lines, on purpose: every interface a plugin implements, with each optional member's default and its
documentation, is in this one file, which the plugin guide's tables follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import PluginError
from harness.types import (
    AnswerSpec,
    Example,
    Generation,
    GradedGeneration,
    Progress,
    TrainingContext,
    TrainingExample,
    TrainingSettings,
)

Problems = list[tuple[str, str]]
"""``(key, message)`` pairs, e.g. ``[("model", "folder /x does not exist")]``; the recipe error names the key
under the component's section (``student.model: ...``)."""


@dataclass
class TeacherUsage:
    """What a teacher's calls cost, for the teach stage's summary, the manifest and the leaderboard."""

    requests: int = 0
    """Requests sent (retries included)."""
    cached: int = 0
    """Completions answered from the cache (not paid again)."""
    failed: int = 0
    """Completions that still failed after every retry (asked again by the next run)."""
    retries: int = 0
    deduplicated: int = 0
    """Completions answered by an identical request already in flight (not sent twice)."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    """In the currency of the recipe's prices; 0 when no prices are given."""
    batched: int = 0
    """Completions answered through a batch API (billed at the batch price)."""
    batches: list[str] = field(default_factory=list)
    """The ids of the batches those came from."""
    placement: dict[str, str] = field(default_factory=dict)
    """Where a local model teacher ran (``{"device": "cuda:0", "dtype": "bfloat16"}``); empty for API teachers."""
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    """With several servers: ``{"base_url", "answered", "failed", "dead"}`` for each (``dead``: it stopped
    answering and its requests went to the others)."""
    notes: list[str] = field(default_factory=list)
    """Anything about the calls the user should hear (a server's duplicated or unusable batch answers...): shown
    with the teach stage's summary."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class TeacherEstimate(TeacherUsage):
    """What the teach stage would send, before it runs (``harness estimate``): ``requests``, ``cached`` (completions
    the cache holds already: not asked again), ``input_tokens`` (prompt tokens), ``output_tokens`` (at most:
    ``max_tokens`` per completion), ``cost`` (at most, from the recipe's prices)."""

    tokens_counted: bool = False
    """True when the prompt tokens were counted with the model's tokenizer; False when estimated."""
    notes: list[str] = field(default_factory=list)
    """What the figures cannot know in advance (e.g. prompts that depend on answers not yet given)."""


class Objective:
    """A strategy's own training loss (token-level distillation, ...), used by the student instead of plain
    cross-entropy on the targets.

    Example (half cross-entropy, half a penalty on the first target token's logit)::

        class Mine(harness.Objective):
            def loss(self, outputs, labels, batch):
                return 0.5 * outputs.loss + 0.5 * outputs.logits[:, 0].pow(2).mean()
    """

    signals: tuple[str, ...] = ()
    """The teacher signals it needs: ``"topk"`` (``topk_ids`` and ``topk_logprobs`` per target token in each row's
    ``TrainingExample.signals``), ``"topk_text"`` (the same as text, ``target_text`` / ``topk_text``, for a
    student with another tokenizer: ``harness.alignment``), ``"scores"`` (the teacher scores new text during
    training: ``scorer.score``), ``"scores_text"`` (the same as text: ``scorer.score_text``). ``"topk"`` requires
    the teacher's tokenizer on the student; the harness checks that (``vocabulary``) and that the teacher gives
    them (``Teacher.signals``) before any teacher call."""
    scorer: Any = None
    """For ``"scores"`` / ``"scores_text"``: set by the harness before training to ``Teacher.scorer()``."""
    tokenizer: Any = None
    """Set by the student before training: the tokenizer of the model being trained."""
    step: int = 0
    """Set by the student before each optimizer step: the optimizer steps done so far (0 during the first)."""
    max_steps: int = 0
    """Set by the student before training: the optimizer steps this training takes."""

    def log(self, name: str, value: float) -> None:
        """Record a scalar for this micro-batch (a loss component, a share of tokens...). The student averages each
        name over every logging step (``training.logging_steps``) and writes the series into the train record
        (``objective_log``: ``[{"step": 10, "kd": 0.52, ...}, ...]``)."""
        logged = self.__dict__.setdefault("_logged", {})
        logged.setdefault(name, []).append(float(value))

    def logged(self) -> dict[str, float]:
        """The mean of each scalar ``log`` recorded since the last call, and forget them (the student calls it at
        each logging step)."""
        logged = self.__dict__.pop("_logged", {})
        return {name: sum(values) / len(values) for name, values in logged.items() if values}

    def prepare(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """Called before the forward pass of each micro-batch with the model being trained; may replace rows
        (on-policy distillation samples continuations from ``model`` and has the ``scorer`` score them). The
        default returns the batch unchanged."""
        return batch

    def stats(self) -> Mapping[str, Any]:
        """Figures for the train stage's record (tokens sampled, seconds spent sampling and scoring...)."""
        return {}

    def close(self) -> None:
        """Called once training ends, whatever happened: release what ``prepare`` held (a served scorer's
        server). The default does nothing."""

    def loss(self, outputs: Any, labels: Any, batch: Mapping[str, Any]) -> Any:
        """The loss to minimise for one micro-batch.

        Args:
            outputs: the model's output for the batch (``outputs.logits`` [batch, length, vocab]; ``outputs.loss``:
                the mean cross-entropy on the target tokens, as the default objective uses it).
            labels: [batch, length] target token ids, -100 where no loss applies (prompt, padding).
            batch: the collated tensors: ``input_ids``, ``attention_mask``, ``weights`` [batch] (each pair's
                ``TrainingExample.weight``), every signal of the pairs aligned with ``labels`` (``topk_ids``
                [batch, length, k] with -1 where there is none, ``topk_logprobs`` with -inf there, a strategy's
                own; ``batch[name][i, j]`` belongs to ``labels[i, j]``, which ``logits[i, j - 1]`` predicts), and
                ``num_items``: the number of target tokens a per-token loss is averaged over (those of the whole
                batch when gradients accumulate over micro-batches: divide a sum over this micro-batch by it).
        """
        raise NotImplementedError


class Task:
    """A benchmark: its splits and how its answers are read.

    Example::

        class Tiny(harness.Task):
            answer = harness.AnswerSpec(kind="number")

            def load(self):
                return {"train": [...], "test": [...]}
    """

    answer: AnswerSpec = AnswerSpec(kind="text")
    """How answers are cleansed from text and compared with the gold answer."""
    hub_dataset: str | None = None
    """The Hugging Face dataset id the task's data comes from, if any (sinks that publish to the Hub use it)."""

    def load(self) -> dict[str, list[Example]]:
        """Return the splits by name; ``train`` and ``test`` are required, ``validation`` is recommended.
        A malformed data file raises ``harness.DataError`` naming the file and record."""
        raise NotImplementedError

    def source(self) -> str:
        """Where the data came from, in words (a path, a hub id, 'generated from seed 0')."""
        return type(self).__name__


class Teacher:
    """Produces rationales (and optionally decompositions) for examples."""

    parallel: bool = False
    """True when ``generate`` is plain computation on its arguments (no server, no GPU, no state kept between
    calls, the object picklable): a large run then calls it on separate chunks in worker processes
    (``run.workers``), where ``progress`` is counted per chunk and ``usage`` is not asked."""

    def generate(self, examples: Sequence[Example], task: Task, progress: Progress) -> list[list[Generation]]:
        """Return, for each example in order, its list of samples (``sample_index`` 0..n-1).

        Args:
            examples: the training questions.
            task: the task (its ``answer`` spec holds the Zero-shot-CoT answer trigger).
            progress: call ``progress(k)`` after finishing ``k`` examples.

        A request that failed for good is returned as a ``Generation`` with ``meta["error"]`` set (and empty
        text): it is never trained on, and the next run asks it again."""
        raise NotImplementedError

    def estimate(self, examples: Sequence[Example], task: Task) -> TeacherEstimate | None:
        """What ``generate`` on ``examples`` would send and cost, minus what the cache holds, without sending
        anything (``harness estimate``). The default: None (a teacher that costs nothing to ask)."""
        return None

    def usage(self) -> TeacherUsage | None:
        """Requests, cache hits, tokens and cost of the last ``generate``; None for teachers that call nothing."""
        return None

    def signals(self) -> tuple[str, ...]:
        """The signals its generations carry in ``Generation.meta["signals"]`` beside the text (``"topk"``: ids,
        ``"topk_text"``: as text) and what its ``scorer`` does (``"scores"``, ``"scores_text"``); a strategy whose
        objective needs one the teacher does not give is refused before any call."""
        return ()

    def vocabulary(self) -> str | None:
        """A hash of the teacher's tokenizer vocabulary (``harness.models.vocabulary_hash``), for token-level
        signals; None when it has none or it cannot be known."""
        return None

    def scorer(self) -> Any:
        """For teachers whose ``signals()`` include ``"scores"``: an object with ``score(input_ids,
        attention_mask, k) -> (topk_ids, topk_logprobs)`` giving, at every position j of the sequences, the
        teacher's k most likely tokens for position j (from its logits at j - 1; position 0 has ids -1); with
        ``"scores_text"`` also ``score_text(prompts, continuations, ended, k) -> [signals]``, for each continuation
        the teacher's tokens and top-k as text (``target_text``, ``topk_text``, ``topk_logprobs``; its end of
        sequence after one that ``ended``). Used during training (on-policy distillation); None by default."""
        return None

    def preflight(self) -> Problems:
        """Checks that can fail later and cost nothing now (a model folder exists, ...); run by ``harness validate``
        and before the first stage of ``harness run``. Return problems, never raise."""
        return []

    def close(self) -> None:
        """Called once the teach stage is over (finished or failed): stop what ``generate`` started and kept for
        its later calls (a server, a loaded model). ``generate`` is called once per chunk of questions."""


class Strategy:
    """Turns teacher output into training data, and says how the trained student is prompted and read."""

    uses_teacher: bool = True
    """False for strategies that train on gold answers only (vanilla): the teach stage is then not needed."""
    prediction_prefix: str | None = None
    """The text after which the answer is read (e.g. ``-->``); None when the whole output is the answer."""
    multi_call: bool = False
    """True when inference is more than one generate call (``lm_eval_model`` returns the model lm-eval runs);
    validation-based model selection refuses such strategies."""
    parallel: bool = False
    """True when ``build`` is plain computation on its arguments (the object picklable): a large run then builds
    separate chunks in worker processes (``run.workers``); numbers in ``stats`` are summed over the chunks."""

    def setup(self, task: Task) -> None:
        """Called once, before ``build`` and any ``prompt``: the default keeps the task as ``self.task`` so
        prompts can depend on it."""
        self.task = task

    def build(self, examples: Sequence[Example], generations: Mapping[str, Sequence[GradedGeneration]],
              task: Task) -> list[TrainingExample]:
        """Build training pairs. Called once per chunk of the training questions (a few thousand at a time, in
        split order), so that no stage holds a large dataset in memory: build each question's pairs from that
        question and its generations alone, and let ``stats`` count across calls.

        Args:
            examples: a chunk of the training questions (the task's ``train`` split).
            generations: example id -> that example's graded teacher samples, in ``sample_index`` order
                (``GradedGeneration(generation, prediction, correct)``). Failed or empty generations are
                already removed; an example may map to an empty list or be absent. Empty when
                ``uses_teacher`` is false.
            task: the task.
        """
        raise NotImplementedError

    def prompt(self, example: Example) -> str:
        """The student's input at test time (must equal the training prompt format)."""
        raise NotImplementedError

    def stop(self) -> list[str]:
        """Strings that end generation at test time (EOS always does)."""
        return []

    def roles(self) -> tuple[str, ...]:
        """The models this strategy trains, by role (Socratic: ``("decomposer", "solver")``); ``("",)`` for one
        model. Each ``TrainingExample.role`` names one of them."""
        return ("",)

    def budget_shares(self) -> Mapping[str, float] | None:
        """How a token budget (``training.max_tokens``) is split between roles; None: in proportion to data."""
        return None

    def objective(self) -> Objective | None:
        """The student's loss for this strategy's data; None (the default): cross-entropy on the targets."""
        return None

    def max_gen_toks(self, configured: int) -> int:
        """How many tokens the student may generate at evaluation. ``configured`` is ``evaluation.max_gen_toks``;
        a strategy whose outputs are longer (or shorter) returns its own figure."""
        return configured

    def lm_eval_model(self, models: Mapping[str, tuple[Any, Any]], batch_size: int, task: Task) -> Any:
        """For ``multi_call`` strategies: the lm-eval ``LM`` that answers the test prompts, given the trained
        ``(model, tokenizer)`` per role. The default (None) evaluates the single model with lm-eval's ``HFLM``.
        ``harness.generation.staged_generate`` is the helper for loops of generate calls."""
        return None

    def stats(self) -> Mapping[str, Any]:
        """Figures about what ``build`` made, over all its calls, for the build stage's summary line (e.g.
        ``{"samples_kept": 812}``)."""
        return {}


class FormattedStrategy(Strategy):
    """A strategy whose test prompts, stop strings and answer prefix follow a ``harness.prompts.StudentFormat``
    (``self.format``, e.g. ``STUDENT_FORMATS["token"]``): Fine-tune-CoT and the strategies built on its format."""

    format: Any = None

    @property
    def prediction_prefix(self) -> str | None:  # type: ignore[override]
        return self.format.prediction_prefix

    def prompt(self, example: Example) -> str:
        return self.format.render_prompt(example.question)

    def stop(self) -> list[str]:
        return list(self.format.stop)


class Student:
    """A trainable model. ``train`` writes a model directory loadable by ``load``."""

    def train(self, train: Sequence[TrainingExample], settings: TrainingSettings, out_dir: Path,
              corpus: Sequence[str], progress: Progress, context: TrainingContext) -> dict[str, Any]:
        """Train on ``train`` and save into ``out_dir``; return summary figures.

        Args:
            train: the strategy's pairs for this role (loss on ``target`` only).
            settings: the recipe's ``[training]`` table.
            out_dir: where the trained model goes, in its native format.
            corpus: all text the student will see (prompts and targets), for a tokenizer built from scratch.
            progress: call ``progress(k)`` after ``k`` optimizer steps; ``progress(0, note="loss 0.71")`` shows a
                short note beside the bar (the built-in student shows its loss).
            context: a checkpoint folder that survives a crash, and a validation scorer for model selection
                (either may be None).

        Returns: at least ``steps`` and ``train_loss``; ``tokens_per_second``, ``parameters`` and ``final_loss``
        are shown when present."""
        raise NotImplementedError

    def load(self, model_dir: Path) -> tuple[Any, Any]:
        """Return ``(model, tokenizer)`` from a directory written by ``train``."""
        raise NotImplementedError

    def preflight(self) -> Problems:
        """Checks that cost nothing now and would fail after the teacher was paid (the model and tokenizer
        load, the architecture builds); run by ``harness validate`` and before ``harness run``'s first stage."""
        return []

    def chat(self, model_dir: Path) -> Mapping[str, str] | None:
        """``{"end_of_turn": "<|im_end|>"}`` when the model in ``model_dir`` was trained through its tokenizer's
        chat template (prompt as the user turn, target as the assistant turn): evaluation then renders prompts
        with lm-eval's ``apply_chat_template`` and stops generation at ``end_of_turn``. The default: None
        (plain-text prompts)."""
        return None

    def check_training(self, settings: TrainingSettings, strategies: Sequence[Any]) -> Problems:
        """What training would refuse given the recipe's training settings and strategies, found before any
        teacher call (``harness validate`` and ``run`` call it): ``(key, message)`` pairs, keys under
        ``student``. The default finds nothing."""
        return []

    def supports(self, objective: Objective) -> Problems:
        """Whether it can train with a strategy's own ``objective``; the default refuses (a student that uses
        ``TrainingContext.objective`` overrides this)."""
        return [("kind", "this student trains with cross-entropy only; it cannot use a strategy's own objective")]

    def vocabulary(self) -> str | None:
        """A hash of the tokenizer the student will train with, when it is known before training (see
        ``Teacher.vocabulary``); None when it is built from the run's data or cannot be known."""
        return None


class Sink:
    """Publishes evaluation results (a local folder, the Hub, a JSON Lines file...)."""

    def publish(self, results_file: Path, samples_files: Sequence[Path], provenance: Mapping[str, Any]) -> list[str]:
        """Publish one evaluation's lm-eval files; return where they went (paths or URLs)."""
        raise NotImplementedError


BASES: dict[str, type] = {"task": Task, "teacher": Teacher, "student": Student, "strategy": Strategy, "sink": Sink}
REQUIRED: dict[str, tuple[str, ...]] = {"task": ("load",), "teacher": ("generate",), "student": ("train", "load"),
                                        "strategy": ("build", "prompt"), "sink": ("publish",)}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "task": ("answer", "hub_dataset", "source"),
    "teacher": ("estimate", "usage", "preflight", "signals", "vocabulary", "scorer", "close"),
    "student": ("preflight", "chat", "supports", "vocabulary", "check_training"),
    "strategy": ("uses_teacher", "prediction_prefix", "multi_call", "setup", "stop", "roles", "budget_shares",
                 "objective", "max_gen_toks", "lm_eval_model", "stats"),
    "sink": (),
}


def conform(kind: str, component: Any, name: str = "") -> Any:
    """Return ``component`` ready for the pipeline: a subclass of the kind's base class as it is; any other
    object (duck typing) with the base class's default bound for each optional member it lacks. A missing
    required member is a ``PluginError`` naming the component."""
    base = BASES[kind]
    if isinstance(component, base):
        return component
    missing = [m for m in REQUIRED[kind] if not callable(getattr(component, m, None))]
    if missing:
        raise PluginError(f"{kind} '{name or type(component).__name__}' has no {', '.join(missing)}(): a {kind} "
                          f"implements harness.{base.__name__} (see docs/plugins/README.md)")
    for member in _OPTIONAL[kind]:
        if not hasattr(component, member):
            default = getattr(base, member)
            setattr(component, member, default.__get__(component) if callable(default) else default)
    return component


def create(kind: str, name: str, **options: Any) -> Any:
    """Build the registered ``kind`` component called ``name`` (``create("task", "svamp", data_dir="...")``), its
    options checked as a recipe's ``[kind]`` table would be (a ``RecipeError`` lists every problem)."""
    from harness._run.registry import load_registry

    return load_registry().create(kind, name, options)


def build_objective(source: Mapping[str, Any]) -> Objective | None:
    """A strategy's objective rebuilt from ``TrainingContext.objective_source`` (in another process: a launched
    training process builds the same strategy, and the same teacher for its scorer, through the registry)."""
    strategy = source["strategy"]
    objective = create("strategy", strategy["kind"], **strategy["config"]).objective()
    if objective is not None and {"scores", "scores_text"} & set(objective.signals) and source.get("teacher"):
        teacher = source["teacher"]
        objective.scorer = create("teacher", teacher["kind"], **teacher["config"]).scorer()
    return objective
