"""The openai teacher's bill before the run (``harness estimate``): the requests ``generate`` would send, from the
same cache keys, minus what the cache holds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import Example, TeacherEstimate, prompts
from harness.cache import JsonlCache


def estimate(teacher: Any, examples: Sequence[Example], task: Any) -> TeacherEstimate:
    """The requests ``generate`` would send (the same cache keys, ``n`` requests and in-flight deduplication),
    their prompt tokens (counted with ``tokenizer`` when given, else about 4 characters a token) and at most
    ``max_tokens`` output tokens per completion; a Zero-shot-CoT answer request whose rationale is not yet
    known is counted with the longest rationale ``max_tokens`` allows."""
    c = teacher.config
    exemplars = prompts.load_few_shot(Path(c.few_shot_file), c.few_shot_key) if c.prompt == "few_shot_cot" else ""
    tok = teacher._tokenizer() if c.tokenizer else None
    count = (lambda text: len(tok(text)["input_ids"])) if tok else (lambda text: -(-len(text) // 4))
    est = TeacherEstimate(tokens_counted=tok is not None)
    seen: set[str] = set()

    def ask(prompt: str, keys: list[str], max_tokens: int, prompt_tokens: int | None = None) -> None:
        missing = [k for k in keys if k not in seen]
        seen.update(missing)
        if not missing:
            return  # asked by another question with the same prompt (one request in flight, not two)
        requests = 1 if len(missing) > 1 and c.use_n else len(missing)
        est.requests += requests
        est.input_tokens += requests * (count(prompt) if prompt_tokens is None else prompt_tokens)
        est.output_tokens += len(missing) * max_tokens

    unknown_stage2 = 0
    with JsonlCache(teacher._cache_path()) as cache:
        for e in examples:
            prompt = prompts.first_prompt(c.prompt, e.question, exemplars)
            keys = [teacher._key(prompt, c.temperature, c.max_tokens, i, c.top_logprobs) for i in range(c.samples)]
            hits = [cache.get(k) for k in keys]
            est.cached += sum(h is not None for h in hits)
            ask(prompt, [k for k, h in zip(keys, hits) if h is None], c.max_tokens)
            if c.prompt not in ("zero_shot_cot", "few_shot_cot"):
                continue
            for hit in hits:
                if hit is None and c.prompt == "zero_shot_cot":  # the rationale is not known yet: its longest
                    unknown_stage2 += 1
                    stage2 = prompts.zero_shot_stage2(e.question, "", task.answer.trigger)
                    ask(stage2, [f"unknown:{e.id}:{unknown_stage2}"], c.answer_max_tokens,
                        count(stage2) + c.max_tokens)
                elif hit is not None and prompts.parse_first(c.prompt, hit["text"])[1] is None:
                    stage2 = prompts.zero_shot_stage2(e.question, hit["text"], task.answer.trigger)
                    key = teacher._key(stage2, 0.0, c.answer_max_tokens, 0)
                    if key in cache:
                        est.cached += 1
                    else:
                        ask(stage2, [key], c.answer_max_tokens)
    if unknown_stage2:
        est.notes.append(f"{unknown_stage2} answer requests (Zero-shot-CoT stage 2) follow rationales not yet "
                         f"written: their prompt tokens are counted with the longest rationale "
                         f"(max_tokens = {c.max_tokens})")
    if c.prompt == "few_shot_cot":
        est.notes.append("a Few-shot-CoT completion without 'The answer is' gets one more answer request; "
                         "those cannot be known in advance and are not counted")
    if not tok:
        est.notes.append("prompt tokens estimated at 4 characters a token; set teacher.tokenizer to count them")
    factor = c.batch_price_factor if c.batch else 1.0
    est.cost = round(factor * (est.input_tokens * c.price_per_million_input
                               + est.output_tokens * c.price_per_million_output) / 1e6, 6)
    if c.batch:
        est.notes.append(f"batch = true: billed at {c.batch_price_factor:g} x the prices given")
    return est
