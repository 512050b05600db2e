"""A transformers student: decoder-only (``AutoModelForCausalLM``) or encoder-decoder (``AutoModelForSeq2SeqLM``,
e.g. T5), from a hub id, a local directory, or an architecture built from scratch.

From scratch, the student trains a word-level tokenizer on the run's own text (every number 0-99 one token, spaces
kept with a ``▁`` marker so decoding restores the text exactly). Training uses the transformers ``Trainer``: the
prompt masked out of the loss (labels -100) or fed to the encoder, EOS closing every target, length-grouped
batches padded only to their own longest row, gradient accumulation below ``micro_batch_size``, DeepSpeed ZeRO
(``deepspeed_stage`` or a DeepSpeed JSON), a LoRA adapter (``lora``), several processes through torchrun or the
deepspeed launcher, checkpoints a killed run resumes from, and validation-based model selection.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import BadInputError, RunError, TrainingContext, TrainingExample, TrainingSettings, hookimpl
from harness.deepspeed import build_config as build_deepspeed_config
from harness.errors import is_out_of_memory
from harness.rundir import atomic_write_json, training_from_dict, training_to_dict
from harness.deepspeed import load_config as load_deepspeed_config
from harness.deepspeed import zero_stage

SPECIALS = {"pad_token": "<pad>", "unk_token": "<unk>", "eos_token": "<eos>"}
_SPLIT = r"▁?(?:-->|###|[A-Za-z]+|\d+|[^A-Za-z\d▁])"


LORA_KEYS = ("r", "alpha", "dropout", "target_modules")


@dataclass(frozen=True)
class Config:
    model: str = ""
    """A hub id (``gpt2``, ``google/flan-t5-small``) or a local model directory. Leave empty to build
    ``architecture`` from scratch. Decoder-only and encoder-decoder models are told apart by their config."""
    architecture: dict[str, Any] = field(default_factory=dict)
    """A from-scratch model: ``model_type`` plus that config's fields, e.g.
    ``{model_type = "gpt2", n_layer = 4, n_embd = 128, n_head = 4, n_positions = 256}`` or
    ``{model_type = "t5", d_model = 64, num_layers = 2, num_heads = 2, d_ff = 128, d_kv = 32}``."""
    tokenizer: str = ""
    """``word`` trains a word-level tokenizer on the run's text; empty uses ``model``'s own tokenizer."""
    lora: dict[str, Any] = field(default_factory=dict)
    """Train a LoRA adapter instead of every weight: ``{r = 8, alpha = 16, dropout = 0.05}`` and optionally
    ``target_modules = ["c_attn"]`` (peft knows the usual ones per architecture). The saved model has the
    adapter merged in (loads like any model); the adapter alone is saved under ``adapter/``."""

    def check(self) -> list[tuple[str, str]]:
        if bool(self.model) == bool(self.architecture):
            return [("model", "give exactly one of model (hub id or directory) or architecture (from scratch)")]
        if self.architecture and "model_type" not in self.architecture:
            return [("architecture", "needs model_type, e.g. model_type = \"gpt2\"")]
        if self.architecture and self.tokenizer != "word":
            return [("tokenizer", "a from-scratch architecture needs tokenizer = \"word\"")]
        if self.tokenizer not in ("", "word"):
            return [("tokenizer", f"unknown tokenizer '{self.tokenizer}'; use \"word\" or leave it out")]
        problems = [(f"lora.{k}", f"unknown LoRA setting; use {', '.join(LORA_KEYS)}")
                    for k in self.lora if k not in LORA_KEYS]
        if self.lora and not (isinstance(self.lora.get("r", 8), int) and self.lora.get("r", 8) >= 1):
            problems.append(("lora.r", "must be a whole number of at least 1"))
        return problems


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


def prompt_ids(tokenizer, prompts: Sequence[str], encoder_decoder: bool) -> list[list[int]]:
    """Prompt tokens as the model family expects them, the way lm-eval encodes contexts: the tokenizer's own
    special tokens (Llama's BOS; T5's closing EOS on the encoder side), never an EOS closing a decoder-only
    prompt (the target follows it)."""
    ids = tokenizer(list(prompts))["input_ids"]
    eos = tokenizer.eos_token_id
    if not encoder_decoder:
        ids = [p[:-1] if p and p[-1] == eos and eos is not None else p for p in ids]
    return ids


def encode(tokenizer, examples: Sequence[TrainingExample], max_length: int,
           encoder_decoder: bool = False) -> list[dict[str, list[int]]]:
    """Token ids with EOS closing every target, truncated to ``max_length``. Decoder-only: one sequence, the
    prompt masked out of the labels (-100). Encoder-decoder: the prompt is the encoder's input, the target
    (+ EOS) the labels. A conversation (``turns``) is one decoder-only sequence, each piece tokenized on its own
    (so every target starts on a token boundary, as at inference), contexts masked, EOS after the last target."""
    if encoder_decoder and any(e.turns for e in examples):
        raise BadInputError("strategy: its training examples are conversations (several targets in one "
                            "sequence), which an encoder-decoder student cannot learn in one pass; use a "
                            "decoder-only student or the strategy's one-example-per-turn form")
    prompts = prompt_ids(tokenizer, [e.prompt for e in examples], encoder_decoder)
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    pieces = [piece for e in examples for turn in e.turns for piece in turn]
    piece_ids = iter(tokenizer(pieces, add_special_tokens=False)["input_ids"] if pieces else [])
    eos = tokenizer.eos_token_id
    weighted = any(e.weight != 1.0 for e in examples)
    rows = []
    for p, t, e in zip(prompts, targets, examples):
        if encoder_decoder:
            ids, labels = p[:max_length], (t + [eos])[:max_length]
        else:
            ids, labels = p + t, [-100] * len(p) + t
            for _ in e.turns:
                context, target = next(piece_ids), next(piece_ids)
                ids, labels = ids + context + target, labels + [-100] * len(context) + target
            ids, labels = (ids + [eos])[:max_length], (labels + [eos])[:max_length]
        rows.append({"input_ids": ids, "labels": labels, **({"weight": e.weight} if weighted else {})})
    return rows


def useful_tokens(row: dict[str, list[int]]) -> int:
    """Non-padding tokens a row puts through the model (encoder input + decoder labels for encoder-decoder)."""
    n = len(row["input_ids"])
    return n if len(row["labels"]) == n else n + len(row["labels"])


class Collator:
    """Right-pads a batch to its own longest row (labels separately: they differ in length for encoder-decoder
    models); counts the real (non-padding) tokens it has seen."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.tokens = 0

    def __call__(self, rows: list[dict[str, list[int]]]):
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        label_width = max(len(r["labels"]) for r in rows)
        self.tokens += sum(useful_tokens(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), label_width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :len(r["labels"])] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if "weight" in rows[0]:
            batch["weights"] = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
        return batch


class LengthGroupedSampler:
    """Training order with little padding, reproducible per epoch: each epoch's order depends only on
    (seed, epoch), never on the global random state, so a run resumed mid-epoch sees the same batches as one
    never interrupted. Indices are shuffled, cut into megabatches of 50 optimizer batches, sorted by length
    inside each, cut into optimizer batches (``group`` rows: micro-batches x accumulation x processes) whose order
    is shuffled, the longest batch first (memory trouble shows at step 1, not hours in)."""

    def __init__(self, lengths: Sequence[int], group: int, seed: int):
        self.lengths, self.group, self.seed, self.epoch = list(lengths), max(1, group), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        mega = self.group * 50
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start: start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i: i + self.group] for i in range(0, len(chunk), self.group)]
        if not batches:
            return iter([])
        longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
        first = batches.pop(longest)
        rest = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return iter([i for batch in [first, *rest] for i in batch])


def weighted_loss(logits, labels, weights, shift: bool = True):
    """Each example's mean token loss (labels -100 ignored), weighted, averaged over the batch. ``shift``: the
    logits at position i predict token i + 1 (decoder-only); encoder-decoder logits align with their labels."""
    import torch.nn.functional as F

    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    logits, target = logits.float(), labels
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                         reduction="none").view(target.shape)
    mask = (target != -100).float()
    per_example = (ce * mask).sum(1) / mask.sum(1).clamp(min=1)
    return (per_example * weights.to(per_example.device)).mean()


def deepspeed_config(settings: TrainingSettings) -> dict[str, Any] | None:
    """The DeepSpeed config for these knobs: the recipe's own file, or one built from ``deepspeed_stage``;
    None without DeepSpeed."""
    if settings.deepspeed_config:
        config, problems = load_deepspeed_config(Path(settings.deepspeed_config), settings)
        if problems:
            raise BadInputError("\n".join(problems))
        return config
    return build_deepspeed_config(settings) if settings.deepspeed_stage is not None else None


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


OOM_HINT = ("lower training.micro_batch_size (the batch stays training.batch_size through gradient accumulation), "
            "shorten training.max_length, use DeepSpeed ZeRO (training.deepspeed_stage = 2 or 3, with "
            "training.deepspeed_offload = true), training.bf16 = true on a GPU, or a LoRA adapter (student.lora)")


class TransformersStudent:
    """A transformers model (decoder-only or encoder-decoder) trained with the transformers Trainer; DeepSpeed,
    LoRA, several processes, checkpoints and validation-based model selection as the recipe asks."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config

    # Model --------------------------------------------------------------------------------------------------

    def _initial(self, corpus: Sequence[str], seed: int):
        import torch
        from transformers import AutoConfig, AutoTokenizer

        c = self.config
        if c.model:
            try:
                tokenizer = AutoTokenizer.from_pretrained(c.model)
                model_config = AutoConfig.from_pretrained(c.model)
                model = _auto_class(model_config).from_pretrained(c.model)
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
               "pad_token_id": tokenizer.pad_token_id, "decoder_start_token_id": tokenizer.pad_token_id}
        try:
            config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **ids, **arch)
        except (ValueError, TypeError) as exc:
            raise BadInputError(f"student.architecture: {exc}") from None
        torch.manual_seed(seed)
        return _auto_class(config).from_config(config), tokenizer

    def _with_lora(self, model):
        if not self.config.lora:
            return model
        from peft import LoraConfig, TaskType, get_peft_model

        lora = self.config.lora
        task_type = TaskType.SEQ_2_SEQ_LM if _encoder_decoder(model) else TaskType.CAUSAL_LM
        try:
            return get_peft_model(model, LoraConfig(
                task_type=task_type, r=lora.get("r", 8), lora_alpha=lora.get("alpha", 16),
                lora_dropout=lora.get("dropout", 0.0), target_modules=lora.get("target_modules"),
                fan_in_fan_out=model.config.model_type == "gpt2"))  # GPT-2 stores its projections transposed
        except ValueError as exc:
            raise BadInputError(f"student.lora: {str(exc).splitlines()[0]} (set lora.target_modules to the "
                                f"model's attention projections, e.g. [\"c_attn\"] for GPT-2)") from None

    # Training -----------------------------------------------------------------------------------------------

    def train(self, train: Sequence[TrainingExample], settings: TrainingSettings, out_dir: Path,
              corpus: Sequence[str], progress, context: TrainingContext | None = None) -> dict[str, Any]:
        context = context or TrainingContext()
        if settings.processes > 1 and "WORLD_SIZE" not in os.environ:
            return self._launch(train, settings, out_dir, corpus, progress, context)
        try:
            return self._train_here(train, settings, out_dir, corpus, progress, context)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise RunError(f"training ran out of memory ({str(exc).splitlines()[0][:200]}). To fit: "
                               f"{OOM_HINT}.") from None
            raise

    def _train_here(self, train, settings: TrainingSettings, out_dir: Path, corpus, progress,
                    context: TrainingContext) -> dict[str, Any]:
        import torch
        from transformers import PrinterCallback, TrainerCallback, TrainingArguments
        from transformers.trainer_utils import get_last_checkpoint
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if settings.threads:
            torch.set_num_threads(settings.threads)
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed prints a warning to stdout
        model, tokenizer = self._initial(corpus, settings.seed)
        parameters = sum(p.numel() for p in model.parameters())
        encoder_decoder = _encoder_decoder(model)
        model = self._with_lora(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows = encode(tokenizer, train, settings.max_length, encoder_decoder)
        collator = Collator(tokenizer.pad_token_id)
        max_steps = settings.max_steps
        if settings.max_tokens:  # a token budget: as many steps as it buys on this data
            mean_length = sum(useful_tokens(r) for r in rows) / max(len(rows), 1)
            max_steps = max(1, math.ceil(settings.max_tokens / (settings.batch_size * mean_length)))

        checkpoints = context.checkpoint_dir if settings.checkpoint_steps and context.checkpoint_dir else None
        resume = get_last_checkpoint(str(checkpoints)) if checkpoints and checkpoints.is_dir() else None
        selection = Selection(context.validate, settings.select_every, checkpoints or out_dir.parent / "selection",
                              tokenizer) if context.validate and settings.select_every else None

        class Report(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                if state.global_step:
                    progress(state.global_step)  # resumed: the steps already done

            def on_step_end(self, args, state, control, **kwargs):
                progress(1)
                if selection and state.global_step % settings.select_every == 0:
                    selection.score(kwargs["model"], state.global_step)

        ds = deepspeed_config(settings)
        args = dict(
            output_dir=str(checkpoints or out_dir / "trainer"),
            max_steps=max_steps,
            per_device_train_batch_size=settings.per_device_batch(),
            gradient_accumulation_steps=settings.accumulation(),
            learning_rate=settings.learning_rate,
            weight_decay=settings.weight_decay,
            adam_beta2=settings.adam_beta2,
            max_grad_norm=settings.max_grad_norm,
            warmup_steps=settings.warmup_ratio,
            lr_scheduler_type=settings.lr_scheduler,
            lr_scheduler_kwargs={"min_lr_rate": settings.min_lr_ratio}
            if settings.lr_scheduler == "cosine_with_min_lr" else {},
            logging_steps=settings.logging_steps,
            save_strategy="steps" if checkpoints else "no",
            save_steps=settings.checkpoint_steps or 500,
            save_total_limit=settings.keep_checkpoints,
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
            trainer = _weighted_trainer()(model=model, args=TrainingArguments(**args), train_dataset=rows,
                                          data_collator=collator, callbacks=[Report()])
            trainer.remove_callback(PrinterCallback)  # the harness shows its own progress
            if selection:
                selection.trainer = trainer
            started = time.perf_counter()
            result = trainer.train(resume_from_checkpoint=resume)
            seconds = time.perf_counter() - started
            chosen = selection.finish(trainer.model, int(result.global_step)) if selection else None
            out_dir.mkdir(parents=True, exist_ok=True)
            self._save(trainer, out_dir, chosen)
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(out_dir))
        losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
        _release()
        return {
            "steps": int(result.global_step),
            "resumed_from_step": int(Path(resume).name.rsplit("-", 1)[-1]) if resume else None,
            "train_loss": round(float(result.training_loss), 4),
            "final_loss": losses[-1] if losses else None,
            "losses": losses,
            "examples": len(rows),
            "parameters": parameters,
            "trainable_parameters": trainable,
            "encoder_decoder": encoder_decoder,
            "tokens": collator.tokens,
            "tokens_per_second": round(collator.tokens / seconds, 1) if seconds else None,
            "seconds": round(seconds, 2),
            "deepspeed_stage": zero_stage(ds),
            "processes": int(os.environ.get("WORLD_SIZE", "1")),
            "batch": {"per_device": settings.per_device_batch(), "accumulation": settings.accumulation(),
                      "total": settings.batch_size},
            **({"selection": selection.summary()} if selection else {}),
        }

    def _save(self, trainer, out_dir: Path, chosen: Path | None) -> None:
        """The trained (or selected) model in its native format; a LoRA adapter merged in, and kept alone under
        ``adapter/``."""
        model = trainer.model
        if not trainer.is_world_process_zero() and (self.config.lora or chosen is not None):
            return
        if self.config.lora:
            if chosen is not None:
                from peft import set_peft_model_state_dict
                from safetensors.torch import load_file

                set_peft_model_state_dict(model, load_file(str(chosen / "adapter_model.safetensors")))
            model.save_pretrained(str(out_dir / "adapter"))
            model.merge_and_unload().save_pretrained(str(out_dir))
        elif chosen is not None:
            for f in chosen.iterdir():
                if f.is_file() and f.name != "selection.json":
                    shutil.copy2(f, out_dir / f.name)
        else:  # every process takes part (ZeRO-3 gathers the partitioned weights); the first one writes
            trainer.save_model(str(out_dir))

    def _launch(self, train, settings: TrainingSettings, out_dir: Path, corpus, progress,
                context: TrainingContext) -> dict[str, Any]:
        """Train in ``settings.processes`` processes started by torchrun or the deepspeed launcher; this process
        waits, shows their progress, and reports their log when one fails."""
        if context.validate and settings.select_every:
            raise BadInputError("training.select_every: model selection runs in a single training process; "
                                "set training.processes = 1 or training.select_every = 0")
        job = (context.checkpoint_dir or out_dir.parent / "launch")
        job.mkdir(parents=True, exist_ok=True)
        (job / "rows.jsonl").write_text("".join(json.dumps(training_to_dict(t)) + "\n" for t in train))
        (job / "corpus.json").write_text(json.dumps(list(corpus)))
        spec = {"config": asdict(self.config), "settings": asdict(settings), "out_dir": str(out_dir),
                "checkpoint_dir": str(context.checkpoint_dir) if context.checkpoint_dir else None,
                "status": str(job / "status.json"), "result": str(job / "result.json")}
        (job / "job.json").write_text(json.dumps(spec))
        (job / "result.json").unlink(missing_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        n = str(settings.processes)
        module = ["harness_builtins.student_transformers", str(job / "job.json")]
        if settings.launcher == "torchrun":
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", n, "--master_addr",
                   "127.0.0.1", "--master_port", port, "-m", *module]
        else:  # deepspeed: --num_gpus is the process count, on CPU too
            cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", n, "--master_addr",
                   "127.0.0.1", "--master_port", port, "--no_local_rank", "--module", *module]
        env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
        env.setdefault("OMP_NUM_THREADS", str(settings.threads or max(1, (os.cpu_count() or 1) // settings.processes)))
        log = job / "launch.log"
        done = 0
        with log.open("w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
            while proc.poll() is None:
                time.sleep(0.5)
                done = _advance(job / "status.json", done, progress)
        _advance(job / "status.json", done, progress)
        if proc.returncode != 0 or not (job / "result.json").exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            if "out of memory" in tail.lower() or "can't allocate memory" in tail.lower():
                raise RunError(f"training ran out of memory in a {settings.launcher} process. To fit: {OOM_HINT}. "
                               f"Log: {log}")
            raise RunError(f"{settings.launcher} training with {n} processes failed (exit {proc.returncode}); "
                           f"log: {log}\n{tail}")
        return json.loads((job / "result.json").read_text())

    def load(self, model_dir: Path):
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = _auto_class(AutoConfig.from_pretrained(str(model_dir))).from_pretrained(str(model_dir))
        model.eval()
        return model, tokenizer


class Selection:
    """Validation-based model selection: scores the model every N steps and keeps the best one on disk (with
    its score history, so a resumed run remembers it)."""

    def __init__(self, validate, every: int, folder: Path, tokenizer):
        self.validate, self.every, self.tokenizer = validate, every, tokenizer
        self.best_dir = folder / "best"
        self.state_file = folder / "selection.json"
        self.trainer = None
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.history: list[list[float]] = state.get("history", [])
        self.best: list[float] | None = state.get("best")

    def score(self, model, step: int) -> None:
        if any(h[0] == step for h in self.history):
            return
        was_training = model.training
        model.eval()
        try:
            acc = float(self.validate(model, self.tokenizer))
        finally:
            model.train(was_training)
        self.history.append([step, acc])
        if self.best is None or acc > self.best[1]:
            self.best = [step, acc]
            self.trainer.save_model(str(self.best_dir))
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.state_file, {"history": self.history, "best": self.best})

    def finish(self, model, final_step: int) -> Path | None:
        """Score the final model too; the best model's folder if it is not the final one, else None."""
        self.score(model, final_step)
        return self.best_dir if self.best and self.best[0] != final_step else None

    def summary(self) -> dict[str, Any]:
        return {"history": self.history, "best_step": self.best[0] if self.best else None,
                "best_accuracy": self.best[1] if self.best else None}


def _advance(status: Path, done: int, progress) -> int:
    """Move the progress bar to the step a launched rank 0 last reported."""
    try:
        step = int(json.loads(status.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return done
    if step > done:
        progress(step - done)
        return step
    return done


def _encoder_decoder(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def _auto_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def _weighted_trainer():
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        """The Trainer, with the harness's length-grouped order and per-example loss weights when the batch
        carries ``weights``."""

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            a = self.args
            group = a.per_device_train_batch_size * a.gradient_accumulation_steps * max(1, a.world_size)
            return LengthGroupedSampler([useful_tokens(r) for r in dataset], group, a.data_seed or a.seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("weights", None)
            if weights is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            outputs = model(**inputs)  # encoder-decoder models need the labels for their decoder inputs
            shift = not getattr(getattr(model, "config", None), "is_encoder_decoder", False)
            loss = weighted_loss(outputs.logits, inputs["labels"], weights, shift=shift)
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


def _worker(job_file: str) -> None:
    """One launched training process (torchrun / deepspeed launcher): train, and on rank 0 report progress and
    the result."""
    job = json.loads(Path(job_file).read_text())
    folder = Path(job_file).parent
    rank0 = int(os.environ.get("RANK", "0")) == 0
    settings = TrainingSettings(**job["settings"])
    student = TransformersStudent(Config(**job["config"]))
    with (folder / "rows.jsonl").open() as f:  # lines end at "\n" only (texts may hold U+2028 and friends)
        rows = [training_from_dict(json.loads(line)) for line in f if line.strip()]
    corpus = json.loads((folder / "corpus.json").read_text())
    step = [0]

    def progress(n: int) -> None:
        step[0] += n
        if rank0:
            atomic_write_json(Path(job["status"]), {"step": step[0]}, durable=False)  # every step: no fsync

    checkpoint_dir = Path(job["checkpoint_dir"]) if job["checkpoint_dir"] else None
    info = student.train(rows, settings, Path(job["out_dir"]), corpus, progress,
                         TrainingContext(checkpoint_dir=checkpoint_dir))
    if rank0:
        atomic_write_json(Path(job["result"]), info)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # leave together, once every rank is done
        dist.barrier()
        dist.destroy_process_group()
    # Skip the interpreter's teardown: destroying gloo's threads there sometimes aborts a rank ("terminate
    # called without an active exception") after its work is done, and the launcher then fails the whole run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@hookimpl
def register_students(register):
    register("transformers", TransformersStudent)


if __name__ == "__main__":
    _worker(sys.argv[1])
