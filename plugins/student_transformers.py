"""A transformers causal-LM student: a hub id, a local directory, or an architecture built from scratch.

From scratch, the student trains a word-level tokenizer on the run's own text (every number 0-99 one token, spaces
kept with a ``▁`` marker so decoding restores the text exactly). Training uses the transformers ``Trainer`` with the
prompt masked out of the loss (labels -100), EOS appended, length-grouped batches, and DeepSpeed ZeRO when the
recipe's ``training.deepspeed_stage`` is set.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import BadInputError, TrainingExample, TrainingSettings, hookimpl

SPECIALS = {"pad_token": "<pad>", "unk_token": "<unk>", "eos_token": "<eos>"}
_SPLIT = r"▁?(?:-->|###|[A-Za-z]+|\d+|[^A-Za-z\d▁])"


@dataclass(frozen=True)
class Config:
    model: str = ""
    """A hub id (``gpt2``) or a local model directory. Leave empty to build ``architecture`` from scratch."""
    architecture: dict[str, Any] = field(default_factory=dict)
    """A from-scratch model: ``model_type`` plus that config's fields, e.g.
    ``{model_type = "gpt2", n_layer = 4, n_embd = 128, n_head = 4, n_positions = 256}``."""
    tokenizer: str = ""
    """``word`` trains a word-level tokenizer on the run's text; empty uses ``model``'s own tokenizer."""

    def check(self) -> list[tuple[str, str]]:
        if bool(self.model) == bool(self.architecture):
            return [("model", "give exactly one of model (hub id or directory) or architecture (from scratch)")]
        if self.architecture and "model_type" not in self.architecture:
            return [("architecture", "needs model_type, e.g. model_type = \"gpt2\"")]
        if self.architecture and self.tokenizer != "word":
            return [("tokenizer", "a from-scratch architecture needs tokenizer = \"word\"")]
        if self.tokenizer not in ("", "word"):
            return [("tokenizer", f"unknown tokenizer '{self.tokenizer}'; use \"word\" or leave it out")]
        return []


def train_word_tokenizer(corpus: Sequence[str]):
    """A word-level tokenizer over ``corpus`` with every number 0-99 as one token (with and without a space)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=SPECIALS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    numbers = " ".join(str(i) for i in range(100))
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIALS.values()), min_frequency=1)
    tok.train_from_iterator([numbers, " " + numbers, *corpus], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS["eos_token"], **SPECIALS)


def encode(tokenizer, examples: Sequence[TrainingExample], max_length: int) -> list[dict[str, list[int]]]:
    """Token ids with the prompt masked out of the labels and EOS appended, truncated to ``max_length``."""
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    weighted = any(e.weight != 1.0 for e in examples)
    rows = []
    for p, t, e in zip(prompts, targets, examples):
        ids = (p + t + [eos])[:max_length]
        labels = ([-100] * len(p) + t + [eos])[:max_length]
        rows.append({"input_ids": ids, "labels": labels, **({"weight": e.weight} if weighted else {})})
    return rows


class Collator:
    """Right-pads a batch; counts the real (non-padding) tokens it has seen."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.tokens = 0

    def __call__(self, rows: list[dict[str, list[int]]]):
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        self.tokens += sum(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if "weight" in rows[0]:
            batch["weights"] = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
        return batch


def weighted_loss(logits, labels, weights):
    """Each example's mean token loss (labels -100 ignored), weighted, averaged over the batch."""
    import torch.nn.functional as F

    logits, target = logits[:, :-1].float(), labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                         reduction="none").view(target.shape)
    mask = (target != -100).float()
    per_example = (ce * mask).sum(1) / mask.sum(1).clamp(min=1)
    return (per_example * weights.to(per_example.device)).mean()


def deepspeed_config(settings: TrainingSettings) -> dict[str, Any]:
    """A DeepSpeed config whose ``"auto"`` values the transformers integration fills from the training knobs."""
    zero: dict[str, Any] = {"stage": settings.deepspeed_stage}
    if settings.deepspeed_offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    if settings.deepspeed_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero,
        # torch's AdamW: no DeepSpeed op to compile, also with optimizer offload.
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                   "weight_decay": "auto", "torch_adam": True}},
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": "auto"},
    }


_OWN_DIST_ENV: dict[str, str] | None = None


@contextlib.contextmanager
def training_env(deepspeed: bool) -> Iterator[None]:
    """Training may change ``os.environ`` (accelerate sets ``ACCELERATE_USE_DEEPSPEED`` and friends; DeepSpeed
    needs MASTER_ADDR/PORT, RANK, WORLD_SIZE and LOCAL_RANK even for one process): the environment is restored
    afterwards, so later trainings and anything this process starts see the environment it had before.

    Without a launcher, the single-process values are chosen once: the process group DeepSpeed starts lives as
    long as the process (DeepSpeed keeps references to it) and later trainings reuse it with the same values.
    """
    global _OWN_DIST_ENV
    saved = dict(os.environ)
    if deepspeed and "WORLD_SIZE" not in os.environ:
        if _OWN_DIST_ENV is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = str(s.getsockname()[1])
            _OWN_DIST_ENV = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": "0", "WORLD_SIZE": "1",
                             "LOCAL_RANK": "0"}
        os.environ.update(_OWN_DIST_ENV)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class TransformersStudent:
    """A decoder-only transformers model trained with the transformers Trainer (DeepSpeed optional)."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def _initial(self, corpus: Sequence[str], seed: int):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        c = self.config
        if c.model:
            try:
                tokenizer = AutoTokenizer.from_pretrained(c.model)
                model = AutoModelForCausalLM.from_pretrained(c.model)
            except (OSError, ValueError) as exc:
                offline = " (HF_HUB_OFFLINE is set: only local directories and cached models load)" if \
                    os.environ.get("HF_HUB_OFFLINE") else ""
                raise BadInputError(f"student.model: cannot load '{c.model}'{offline}: "
                                    f"{str(exc).splitlines()[0]}") from None
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            return model, tokenizer
        tokenizer = train_word_tokenizer(corpus)
        arch = dict(c.architecture)
        model_type = arch.pop("model_type")
        ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **ids, **arch)
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config), tokenizer

    def train(self, train: Sequence[TrainingExample], settings: TrainingSettings, out_dir: Path,
              corpus: Sequence[str], progress) -> dict[str, Any]:
        import torch
        from transformers import PrinterCallback, TrainerCallback, TrainingArguments
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        if settings.threads:
            torch.set_num_threads(settings.threads)
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed prints a warning to stdout
        model, tokenizer = self._initial(corpus, settings.seed)
        parameters = sum(p.numel() for p in model.parameters())
        rows = encode(tokenizer, train, settings.max_length)
        collator = Collator(tokenizer.pad_token_id)
        max_steps = settings.max_steps
        if settings.max_tokens:  # a token budget: as many steps as it buys on this data
            mean_length = sum(len(r["input_ids"]) for r in rows) / max(len(rows), 1)
            max_steps = max(1, math.ceil(settings.max_tokens / (settings.batch_size * mean_length)))
        losses: list[float] = []

        class Report(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                progress(1)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    losses.append(float(logs["loss"]))

        ds = deepspeed_config(settings) if settings.deepspeed_stage is not None else None
        WeightedTrainer = _weighted_trainer()
        args = dict(
            output_dir=str(out_dir / "trainer"),
            max_steps=max_steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            weight_decay=settings.weight_decay,
            adam_beta2=settings.adam_beta2,
            max_grad_norm=settings.max_grad_norm,
            warmup_steps=settings.warmup_ratio,
            lr_scheduler_type=settings.lr_scheduler,
            lr_scheduler_kwargs={"min_lr_rate": settings.min_lr_ratio}
            if settings.lr_scheduler == "cosine_with_min_lr" else {},
            train_sampling_strategy="group_by_length",
            logging_steps=settings.logging_steps,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=settings.seed,
            data_seed=settings.seed,
            use_cpu=not torch.cuda.is_available(),
            bf16=settings.bf16,
            deepspeed=ds,
            remove_unused_columns=False,
            dataloader_num_workers=0,
        )
        with training_env(deepspeed=ds is not None):
            trainer = WeightedTrainer(model=model, args=TrainingArguments(**args), train_dataset=rows,
                              data_collator=collator, callbacks=[Report()])
            trainer.remove_callback(PrinterCallback)  # the harness shows its own progress
            started = time.perf_counter()
            result = trainer.train()
            seconds = time.perf_counter() - started
            out_dir.mkdir(parents=True, exist_ok=True)
            trainer.save_model(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
        _release()
        return {
            "steps": int(result.global_step),
            "train_loss": round(float(result.training_loss), 4),
            "final_loss": losses[-1] if losses else None,
            "losses": losses,
            "examples": len(rows),
            "parameters": parameters,
            "tokens": collator.tokens,
            "tokens_per_second": round(collator.tokens / seconds, 1) if seconds else None,
            "seconds": round(seconds, 2),
            "deepspeed_stage": settings.deepspeed_stage,
        }

    def load(self, model_dir: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        model.eval()
        return model, tokenizer


def _weighted_trainer():
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        """The Trainer, with per-example loss weights when the batch carries ``weights``."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("weights", None)
            if weights is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = weighted_loss(outputs.logits, labels, weights)
            return (loss, outputs) if return_outputs else loss

    return WeightedTrainer


def _release() -> None:
    """Forget process-wide training state so that later loads and trainings in this process start clean:
    transformers' global ZeRO-3 config (else ``from_pretrained`` builds partitioned, empty models) and
    accelerate's state."""
    try:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    except ImportError:
        pass
    try:
        from accelerate.state import AcceleratorState, PartialState

        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    except Exception:  # older accelerate: nothing to reset
        pass


@hookimpl
def register_students(register):
    register("transformers", TransformersStudent)
