"""Generation from an in-memory transformers model (public: strategies use it): greedy and sampled decoding,
decoder-only or encoder-decoder alike; staged (multi-call) decoding; an lm-eval model from a function.

Used where the harness generates outside lm-eval: model selection on validation questions during training, and
strategies whose inference is several generate calls (Socratic CoT). Prompts are tokenized with the tokenizer's
defaults (as lm-eval does), left-padded for decoder-only models, and left-truncated so that prompt + continuation
fit the model's positions (a long transcript keeps its latest turns).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.models import is_encoder_decoder  # re-exported: generation callers used to import it from here


def max_positions(model: Any) -> int:
    """The longest sequence the model (or model config) takes (2048 where the config does not say, e.g. relative
    positions)."""
    config = getattr(model, "config", model)
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048


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
    """The greedy continuation of each prompt (special tokens dropped, cut at the first stop string). ``model``
    may also be a served model (``harness.serve.ServedModel``): the prompts then go to its server."""
    if hasattr(model, "complete"):
        return model.complete(prompts, max_new_tokens, stop)
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


def sample_generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, samples: int,
                    temperature: float, batch_size: int = 16, stop: Sequence[str] = (), seed: int | None = None
                    ) -> list[list[str]]:
    """``samples`` sampled continuations of each prompt (temperature sampling, no top-k cut), cut at stops."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    limit = max_positions(model)
    new = max(1, min(max_new_tokens, limit // 2))
    saved = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    out: list[list[str]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start: start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max(1, limit - new))
            enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                ids = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0,
                                     num_return_sequences=samples, max_new_tokens=new,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [[cut_at_stop(t, stop) for t in texts[i * samples: (i + 1) * samples]] for i in range(len(chunk))]
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved
    return out


def staged_generate(generate: Callable[[list[str]], list[str]], prompts: Sequence[str],
                    next_prompt: Callable[[int, str, str], str | None], max_rounds: int) -> list[list[str]]:
    """Multi-call decoding (least-to-most, Socratic-style loops), batched across questions.

    Args:
        generate: answers a batch of prompts (e.g. ``lambda ps: greedy_generate(model, tok, ps, 64)``).
        prompts: each question's first prompt.
        next_prompt: ``next_prompt(i, prompt, output)`` gives question ``i``'s next prompt from the prompt it was
            just asked and its output, or None when that question is done.
        max_rounds: a cap on calls per question.

    Returns: each question's outputs, in the order they were generated.

    Example (least-to-most: ask for sub-questions until the model writes ``DONE``)::

        outs = staged_generate(gen, [f"{q} ###" for q in questions],
                               lambda i, p, o: None if "DONE" in o else f"{p} {o} Q:", max_rounds=6)
    """
    outputs: list[list[str]] = [[] for _ in prompts]
    current: dict[int, str] = dict(enumerate(prompts))
    for _ in range(max_rounds):
        if not current:
            break
        order = sorted(current)
        answers = generate([current[i] for i in order])
        if len(answers) != len(order):
            raise ValueError(f"generate returned {len(answers)} outputs for {len(order)} prompts")
        following: dict[int, str] = {}
        for i, answer in zip(order, answers):
            outputs[i].append(answer)
            nxt = next_prompt(i, current[i], answer)
            if nxt is not None:
                following[i] = nxt
        current = following
    return outputs


def generation_lm(answer: Callable[[list[str]], list[str]], name: str = "harness-generate") -> Any:
    """An lm-eval ``LM`` whose ``generate_until`` is ``answer(prompts)`` (the rest of lm-eval's interface is
    refused): what a ``multi_call`` strategy's ``lm_eval_model`` returns, with no lm-eval subclass of its own."""
    from lm_eval.api.model import LM

    class GenerationLM(LM):
        def generate_until(self, requests) -> list[str]:
            return list(answer([r.args[0] for r in requests]))

        def loglikelihood(self, requests):
            raise NotImplementedError(f"{name} generates only (generate_until)")

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError(f"{name} generates only (generate_until)")

    return GenerationLM()


def signal_problem(signals: Mapping[str, Any], vocabulary_size: int | None = None) -> str | None:
    """What makes a generation's token-level signals (``Generation.meta["signals"]``) unusable for training, or
    None: ``target_ids`` that are not token ids, ``topk_ids`` / ``topk_logprobs`` not one list per target token of
    the same length, a log-probability that is NaN or +inf (or above 0 by more than rounding), or an id outside
    ``[0, vocabulary_size)``; text signals (``target_text``, ``topk_text``: ``harness.alignment``) that are not one
    text per token. -inf is a probability of 0 and id -1 an empty slot: both are fine.
    Teachers call it on what a server returned, and the teach stage on every teacher's generations."""
    from harness.alignment import text_problem

    problem = text_problem(signals)
    if problem:
        return problem
    limit = vocabulary_size if vocabulary_size else math.inf
    size = f"({vocabulary_size or '?'} tokens)"
    target = signals.get("target_ids")
    if target is not None:
        for i, t in enumerate(target):
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < limit:
                return f"target_ids[{i}] = {t!r} is not a token id of the vocabulary {size}"
    ids, lps = signals.get("topk_ids"), signals.get("topk_logprobs")
    if ids is None and lps is None:
        return None
    if ids is None and "topk_text" in signals:  # text only (ids unknown): check the log-probabilities alone
        ids = [[0] * len(row) if isinstance(row, list) else row for row in lps]
    if ids is None or lps is None or len(ids) != len(lps) or (target is not None and len(ids) != len(target)):
        return "topk_ids and topk_logprobs must both be there, one list per target token"
    for i, (row_ids, row_lps) in enumerate(zip(ids, lps)):
        if len(row_ids) != len(row_lps):
            return f"topk_ids[{i}] and topk_logprobs[{i}] differ in length"
        for j, (t, lp) in enumerate(zip(row_ids, row_lps)):
            if not isinstance(t, int) or isinstance(t, bool) or not -1 <= t < limit:
                return f"topk_ids[{i}][{j}] = {t!r} is not a token id of the vocabulary {size}"
            if not isinstance(lp, (int, float)) or isinstance(lp, bool) or math.isnan(lp) or lp > 1e-3:
                return f"topk_logprobs[{i}][{j}] = {lp!r} is not a log-probability (NaN, +inf or above 0)"
    return None
