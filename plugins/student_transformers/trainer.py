"""The transformers ``Trainer`` as the harness uses it: its training order and loss weights, DeepSpeed configs,
the process environment training may change, checkpoints whose completeness is checkable, and the process-wide
state to release afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import BadInputError, RunError, TrainingSettings
from harness.deepspeed import build_config as build_deepspeed_config
from harness.deepspeed import load_config as load_deepspeed_config
from harness.io import atomic_write_json
from harness.models import is_encoder_decoder

from .encoding import LengthGroupedSampler, useful_tokens


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


def free_memory(cuda: bool) -> int | None:
    """Bytes free where the model trains: the GPU's free memory, else the machine's available memory (Linux's
    ``MemAvailable``); None where it cannot be told."""
    if cuda:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def check_fits(trainable: int, cuda: bool, deepspeed: bool) -> None:
    """Before training: every trainable parameter needs an fp32 gradient and AdamW's two fp32 moments (12 bytes)
    beyond the loaded model, whatever the batch. When even that exceeds the free memory, training would be killed
    (or fail) at its first step: stop now with the knobs. DeepSpeed shards or offloads that state: not checked."""
    free = free_memory(cuda)
    need = 12 * trainable
    if deepspeed or free is None or need <= free:
        return
    where = "the GPU has" if cuda else "this machine has"
    raise RunError(f"training would not fit: {trainable:,} trainable parameters need {need / 2**30:.1f} GiB for "
                   f"their gradients and optimizer state beyond the model itself, and {where} "
                   f"{free / 2**30:.1f} GiB free. To fit: {OOM_HINT}")


def auto_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if is_encoder_decoder(config) else AutoModelForCausalLM


MODEL_INPUTS = ("input_ids", "attention_mask", "labels")
"""What goes into the model's forward pass; every other key of a batch is a signal (or the weights) for the
objective."""


def weighted_trainer():
    import torch
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        """The Trainer, with the harness's length-grouped order and per-example loss weights when the batch
        carries ``weights``."""

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            a = self.args
            group = a.per_device_train_batch_size * a.gradient_accumulation_steps * max(1, a.world_size)
            lengths = getattr(dataset, "lengths", None)  # a token store keeps them in a column
            if lengths is None:
                lengths = [useful_tokens(r) for r in dataset]
            return LengthGroupedSampler(lengths, group, a.data_seed or a.seed)

        objective = None
        """A strategy's own loss (``harness.Objective``), set by the student."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            signals = {k: inputs.pop(k) for k in list(inputs) if k not in MODEL_INPUTS and k != "weights"}
            if self.objective is not None:
                weights = inputs.pop("weights", None)
                if weights is None:
                    weights = inputs["labels"].new_ones(inputs["labels"].shape[0], dtype=torch.float32)
                before = inputs["labels"]
                # on-policy: may replace rows
                prepared = self.objective.prepare(model, {**inputs, **signals, "weights": weights})
                inputs = {k: v for k, v in prepared.items() if k in MODEL_INPUTS}
                signals = {k: v for k, v in prepared.items() if k not in MODEL_INPUTS}
                if inputs["labels"] is not before and num_items_in_batch is not None:
                    # the rows changed, so the Trainer's count of target tokens no longer holds: count this
                    # micro-batch's, as if the others of the accumulated batch were the same size
                    own = (inputs["labels"][:, 1:] != -100).sum()
                    num_items_in_batch = own * self.args.gradient_accumulation_steps * max(1, self.args.world_size)
                # outputs.loss is the cross-entropy exactly as the default objective computes it (summed over the
                # target tokens of the whole accumulated batch and divided by their number, num_items_in_batch)
                counted = num_items_in_batch is not None and self.model_accepts_loss_kwargs
                outputs = model(**inputs, **({"num_items_in_batch": num_items_in_batch} if counted else {}))
                labels = inputs["labels"]
                items = num_items_in_batch if counted else (labels[:, 1:] != -100).sum()
                batch = {**inputs, **signals, "num_items": items}
                loss = self.objective.loss(outputs, labels, batch)
                if counted and self.args.average_tokens_across_devices and self.args.world_size > 1:
                    # num_items counts the target tokens of every process, and the processes' gradients are
                    # averaged: scaled back to a sum over processes (as the Trainer does for its own loss)
                    loss = loss * self.accelerator.num_processes
                loss = self._finite(loss)
                return (loss, outputs) if return_outputs else loss
            weights = inputs.pop("weights", None)
            if weights is None:
                found = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                self._finite(found[0] if return_outputs else found)
                return found
            outputs = model(**inputs)  # encoder-decoder models need the labels for their decoder inputs
            shift = not is_encoder_decoder(model)
            loss = self._finite(weighted_loss(outputs.logits, inputs["labels"], weights, shift=shift))
            return (loss, outputs) if return_outputs else loss

        def _finite(self, loss):
            """The loss, or a stop: a NaN or infinite loss would train (and publish) a model of NaN weights."""
            import torch

            if not bool(torch.isfinite(loss.detach()).all()):
                raise RunError(f"training: the loss is {float(loss.detach().float().sum())} at step "
                               f"{self.state.global_step + 1}, so training stopped and no model was saved. Usual "
                               f"causes: a learning rate too high (training.learning_rate), bf16 overflow "
                               f"(training.bf16 = false), or a strategy loss given broken signals")
            return loss

    return WeightedTrainer


def release_training_state() -> None:
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


CHECKPOINT_MARKER = "harness-complete.json"
"""Written into ``checkpoint-N/`` after every file of it (model, optimizer, scheduler, RNG, trainer state): a
checkpoint without it was cut short by a kill and is never resumed from."""


def latest_complete_checkpoint(folder: Path) -> tuple[Path | None, list[Path]]:
    """The newest checkpoint with its completion marker (and the trainer state resuming reads), and the newer ones
    without (removed: a kill cut them short or a file went missing, and the Trainer's rotation must not count
    them)."""
    if not folder.is_dir():
        return None, []
    found = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()),
                   key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True)
    skipped = []
    for path in found:
        # the marker is written last; a checkpoint damaged after it (a file deleted) is no more resumable
        if (path / CHECKPOINT_MARKER).is_file() and (path / "trainer_state.json").is_file():
            for bad in skipped:
                shutil.rmtree(bad, ignore_errors=True)
            return path, skipped
        skipped.append(path)
    for bad in skipped:
        shutil.rmtree(bad, ignore_errors=True)
    return None, skipped


def checkpoint_marker_class():
    from transformers import TrainerCallback

    class Marker(TrainerCallback):
        """Marks each saved checkpoint complete, with the sum of the step losses so far, so that a resumed run
        reports the whole run's mean loss (the Trainer's own covers only the steps after the resume)."""

        def __init__(self, resume: str | Path | None):
            self.trainer = None
            self.resumed_step = None
            self.loss_before = 0.0
            if resume:
                record = json.loads((Path(resume) / CHECKPOINT_MARKER).read_text())
                self.resumed_step, self.loss_before = int(record["step"]), float(record["loss_sum"])

        def _loss_sum(self) -> float:
            t = self.trainer  # the Trainer keeps the sum of logged step losses plus the part not yet logged
            return self.loss_before + float(t._total_loss_scalar) + float(t._tr_loss.item())

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    atomic_write_json(folder / CHECKPOINT_MARKER, {"step": state.global_step,
                                                                   "loss_sum": self._loss_sum()})

        def whole_run_loss(self, trainer_loss: float, global_step: int) -> float:
            if not self.resumed_step:
                return trainer_loss
            return (self.loss_before + trainer_loss * (global_step - self.resumed_step)) / max(global_step, 1)

    return Marker


def CheckpointMarker(resume: str | Path | None):  # noqa: N802 (a class built on first use: transformers is slow)
    return checkpoint_marker_class()(resume)
