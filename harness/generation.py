"""Greedy generation from an in-memory transformers model, decoder-only or encoder-decoder alike.

Used where the harness generates outside lm-eval: model selection on validation questions during training, and
strategies whose inference is several generate calls (Socratic CoT). Prompts are tokenized with the tokenizer's
defaults (as lm-eval does), left-padded for decoder-only models, and left-truncated so that prompt + continuation
fit the model's positions (a long transcript keeps its latest turns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def max_positions(model: Any) -> int:
    """The longest sequence the model takes (2048 where the config does not say, e.g. relative positions)."""
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048


def is_encoder_decoder(model: Any) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    end = len(text)
    for s in stop:
        at = text.find(s)
        if s and at != -1:
            end = min(end, at)
    return text[:end]


def greedy_generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                    batch_size: int = 16, stop: Sequence[str] = ()) -> list[str]:
    """The greedy continuation of each prompt (special tokens dropped, cut at the first stop string)."""
    import torch

    seq2seq = is_encoder_decoder(model)
    limit = max_positions(model)
    new = max(1, min(max_new_tokens, limit // 2)) if not seq2seq else max_new_tokens
    saved = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side = "left" if not seq2seq else "right"
    tokenizer.truncation_side = "left"
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start: start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                            max_length=max(1, limit - (0 if seq2seq else new)))
            enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=new, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            continuation = ids if seq2seq else ids[:, enc["input_ids"].shape[1]:]
            out += [cut_at_stop(t, stop) for t in tokenizer.batch_decode(continuation, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved
    return out
