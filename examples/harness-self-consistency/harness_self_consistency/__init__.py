"""Self-consistency decoding on top of Fine-tune-CoT: sample k rationales per question, answer by majority vote."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

from harness import TrainingExample, hookimpl
from harness.answers import extract


@dataclass(frozen=True)
class Config:
    k: int = 5
    temperature: float = 0.7
    filter: bool = True
    max_new_tokens: int = 96

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.k < 1:
            problems.append(("k", "must be at least 1"))
        if self.temperature <= 0:
            problems.append(("temperature", "must be positive (sampling)"))
        return problems


def vote(outputs: list[str], spec) -> str:
    """The output whose answer is the most common (ties: the earliest answer to reach the top count)."""
    answers = [extract(o, spec, "-->") for o in outputs]
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return outputs[0] if outputs else ""
    best = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == best)
    return outputs[answers.index(winner)]


class SelfConsistency:
    Config = Config
    uses_teacher = True
    prediction_prefix = "-->"

    def __init__(self, config: Config):
        self.config = config

    def prompt(self, example) -> str:
        return f"{example.question} ###"

    def stop(self) -> list[str]:
        return ["###"]

    def build(self, examples, generations, task) -> list[TrainingExample]:
        return [TrainingExample(e.id, self.prompt(e), f" {g.generation.rationale.strip()} --> {e.answer}")
                for e in examples for g in generations.get(e.id, ()) if g.correct or not self.config.filter]

    def lm_eval_model(self, models, batch_size, task=None):
        model, tokenizer = models[""]
        return lm_class()(model, tokenizer, self.config, batch_size, getattr(task, "answer", None))


@functools.cache
def lm_class() -> type:
    from lm_eval.api.model import LM

    class SelfConsistencyLM(LM):
        def __init__(self, model, tokenizer, config: Config, batch_size: int, spec):
            super().__init__()
            self.model, self.tok, self.config, self.batch_size, self.spec = model, tokenizer, config, batch_size, spec

        def generate_until(self, requests) -> list[str]:
            import torch

            self.tok.padding_side = self.tok.truncation_side = "left"  # keep the end of a long prompt
            k, out = self.config.k, []
            limit = getattr(self.model.config, "n_positions", None) or self.model.config.max_position_embeddings
            new = min(self.config.max_new_tokens, limit // 2)
            prompts = [r.args[0] for r in requests]
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start: start + self.batch_size]
                enc = self.tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False, truncation=True,
                               max_length=limit - new).to(self.model.device)
                with torch.no_grad():
                    ids = self.model.generate(**enc, do_sample=True, temperature=self.config.temperature, top_k=0,
                                              num_return_sequences=k, max_new_tokens=new,
                                              pad_token_id=self.tok.pad_token_id)
                texts = self.tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                out += [vote(texts[i * k: (i + 1) * k], self.spec) for i in range(len(chunk))]
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    return SelfConsistencyLM


@hookimpl
def register_strategies(register):
    register("self_consistency", SelfConsistency)
