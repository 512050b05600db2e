"""Self-consistency decoding on top of Fine-tune-CoT: sample k rationales per question, answer by majority vote."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from harness import Objective, Strategy, TrainingExample, hookimpl
from harness.answers import extract, passes_filter
from harness.generation import generation_lm, sample_generate


@dataclass(frozen=True)
class Config:
    k: int = 5
    temperature: float = 0.7
    filter: bool = True
    max_new_tokens: int = 96
    label_smoothing: float = 0.0
    """epsilon > 0 trains with label smoothing: a loss plugged into the student from this package."""

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.k < 1:
            problems.append(("k", "must be at least 1"))
        if self.temperature <= 0:
            problems.append(("temperature", "must be positive (sampling)"))
        if not 0 <= self.label_smoothing < 1:
            problems.append(("label_smoothing", "must be in [0, 1)"))
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


class SelfConsistency(Strategy):
    """Fine-tune-CoT training; at test time k sampled rationales per question and a majority vote."""

    Config = Config
    prediction_prefix = "-->"
    multi_call = True  # k samples per question and a vote: not one greedy generate call

    def __init__(self, config: Config):
        self.config = config

    def prompt(self, example) -> str:
        return f"{example.question} ###"

    def stop(self) -> list[str]:
        return ["###"]

    def build(self, examples, generations, task) -> list[TrainingExample]:
        return [TrainingExample(e.id, self.prompt(e), f" {g.generation.rationale.strip()} --> {e.answer}")
                for e in examples for g in generations.get(e.id, ()) if passes_filter(g, self.config.filter)]

    def objective(self):
        return LabelSmoothing(self.config.label_smoothing) if self.config.label_smoothing else None

    def lm_eval_model(self, models, batch_size, task):
        model, tokenizer = models[""]
        c = self.config

        def answer(prompts: list[str]) -> list[str]:
            samples = sample_generate(model, tokenizer, prompts, c.max_new_tokens, c.k, c.temperature, batch_size,
                                      stop=self.stop())
            return [vote(texts, task.answer) for texts in samples]

        return generation_lm(answer, "self-consistency")


class LabelSmoothing(Objective):
    """(1 - eps) * cross-entropy + eps * the mean negative log-probability over the whole vocabulary, per target
    token (Szegedy et al. 2016)."""

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def loss(self, outputs, labels, batch):
        import torch

        logprobs = torch.log_softmax(outputs.logits[:, :-1].float(), dim=-1)
        mask = labels[:, 1:] != -100
        uniform = -(logprobs.mean(-1) * mask).sum() / batch["num_items"]
        return (1 - self.epsilon) * outputs.loss + self.epsilon * uniform


@hookimpl
def register_strategies(register):
    register("self_consistency", SelfConsistency)
