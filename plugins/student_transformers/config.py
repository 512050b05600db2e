"""The ``[[student]]`` table of the transformers student."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LORA_DEFAULTS: dict[str, Any] = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None}
"""A ``lora`` table's settings when it leaves them out (``target_modules`` None: peft's choice for the model)."""
LORA_KEYS = tuple(LORA_DEFAULTS)


def lora_settings(lora: dict[str, Any]) -> dict[str, Any]:
    """The ``lora`` table with the defaults it leaves out."""
    return {**LORA_DEFAULTS, **lora}


def peft_lora_options(lora: dict[str, Any]) -> dict[str, Any]:
    """The table as ``peft.LoraConfig`` keyword arguments."""
    s = lora_settings(lora)
    return {"r": s["r"], "lora_alpha": s["alpha"], "lora_dropout": s["dropout"], "target_modules": s["target_modules"]}


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
    """``word`` trains a word-level tokenizer on the run's text; a folder or hub id loads that tokenizer (the
    teacher's, for token-level distillation); empty uses ``model``'s own tokenizer."""
    lora: dict[str, Any] = field(default_factory=dict)
    """Train a LoRA adapter instead of every weight: ``{r = 8, alpha = 16, dropout = 0.05}`` and optionally
    ``target_modules = ["c_attn"]`` (peft knows the usual ones per architecture). The saved model has the
    adapter merged in (loads like any model); the adapter alone is saved under ``adapter/``."""
    chat_template: str = "auto"
    """``auto``: when ``model`` is a pretrained model whose tokenizer has a chat template (an instruct model's),
    train and evaluate through it: the
    prompt as the user turn, the target as the assistant turn (loss on the assistant's tokens), lm-eval's
    ``apply_chat_template`` at evaluation, generation stopped at the template's end-of-turn. ``on``: require
    one; ``off``: plain text even when there is one."""

    def check(self) -> list[tuple[str, str]]:
        if bool(self.model) == bool(self.architecture):
            return [("model", "give exactly one of model (hub id or directory) or architecture (from scratch)")]
        if self.architecture and "model_type" not in self.architecture:
            return [("architecture", "needs model_type, e.g. model_type = \"gpt2\"")]
        if self.architecture and not self.tokenizer:
            return [("tokenizer", "a from-scratch architecture needs tokenizer = \"word\" (built from the run's "
                                  "text) or a tokenizer's folder or hub id")]
        if self.chat_template not in ("auto", "on", "off"):
            return [("chat_template", f"'{self.chat_template}' is not a mode; use auto, on or off")]
        problems = [(f"lora.{k}", f"unknown LoRA setting; use {', '.join(LORA_KEYS)}")
                    for k in self.lora if k not in LORA_KEYS]
        if self.lora and not (isinstance(r := lora_settings(self.lora)["r"], int) and r >= 1):
            problems.append(("lora.r", "must be a whole number of at least 1"))
        return problems
