"""Logit-level knowledge distillation (``logit_kd``): the student learns the teacher's own sampled rationales, token
by token, and matches the teacher's distribution at every token, from the top-k log-probabilities the teacher
recorded in the same pass that wrote the text (``teacher.top_logprobs = k``).

Loss per target token, averaged over the target tokens (DistillKit's sparse KD, Hinton et al.'s temperature):

    loss = alpha * CE(student, teacher's token) + (1 - alpha) * tau^2 * D(teacher_k || student)

- ``forward`` (default): ``sum_k p_t(k) * (log p_t(k) - log q_s(k))``, with ``p_t`` the teacher's top-k
  log-probabilities at temperature ``tau`` renormalised over the k tokens and ``q_s`` the student's softmax over
  the whole vocabulary at ``tau``, read at those k tokens;
- ``reverse``: ``sum_k q'_s(k) * (log q'_s(k) - log p_t(k))``, ``q'_s`` the student renormalised over the k tokens;
- ``jsd``: the generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024),
  ``beta * KL(p_t || m) + (1 - beta) * KL(q'_s || m)`` with ``m = beta * p_t + (1 - beta) * q'_s``.

With ``alpha = 1`` it is Fine-tune-CoT on the teacher's own tokens. Samples are filtered for correctness as
Fine-tune-CoT filters them. Teacher and student must share a tokenizer (checked before any teacher call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import Objective, Strategy, TrainingExample, hookimpl
from harness.answers import passes_filter
from harness.prompts import STUDENT_FORMATS

DIVERGENCES = ("forward", "reverse", "jsd")


@dataclass(frozen=True)
class Config:
    alpha: float = 0.5
    """Weight of the cross-entropy on the teacher's tokens; 1 - alpha weighs the divergence (1: Fine-tune-CoT)."""
    temperature: float = 1.0
    """tau: both distributions are softened by it, and the divergence is scaled by tau^2."""
    divergence: str = "forward"
    """``forward`` (KL(teacher || student)), ``reverse`` (KL(student || teacher)) or ``jsd``."""
    beta: float = 0.5
    """For ``jsd``: the teacher's weight in the mixture."""
    filter: bool = True
    """Keep only samples whose answer is correct (the correctness filter)."""
    max_samples: int = 0
    """Use at most this many samples per question (0: all the teacher gave)."""

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if not 0 <= self.alpha <= 1:
            problems.append(("alpha", "must be in [0, 1]"))
        if self.temperature <= 0:
            problems.append(("temperature", "must be positive"))
        if self.divergence not in DIVERGENCES:
            problems.append(("divergence", f"'{self.divergence}': use {', '.join(DIVERGENCES)}"))
        if not 0 < self.beta < 1:
            problems.append(("beta", "must be in (0, 1)"))
        if self.max_samples < 0:
            problems.append(("max_samples", "must be 0 (all) or more"))
        return problems


def divergence(logits: Any, topk_ids: Any, topk_logprobs: Any, tau: float, kind: str, beta: float) -> Any:
    """Per position [batch, length]: the divergence between the teacher's top-k distribution and the student's
    ``logits`` (same positions, [batch, length, vocab]). Positions without a teacher signal give 0."""
    import torch

    valid = topk_ids >= 0
    ids = topk_ids.clamp(min=0)
    teacher = torch.where(valid, topk_logprobs.float() / tau, torch.full_like(topk_logprobs.float(), -1e9))
    t_log = torch.log_softmax(teacher, dim=-1)  # the teacher renormalised over its k tokens
    t_p = torch.where(valid, t_log.exp(), torch.zeros_like(t_log))
    scaled = logits.float() / tau
    if kind == "forward":
        s_log = torch.log_softmax(scaled, dim=-1).gather(-1, ids)
        terms = t_p * (t_log - s_log)
    else:
        raw = torch.where(valid, scaled.gather(-1, ids), torch.full_like(t_log, -1e9))
        s_log = torch.log_softmax(raw, dim=-1)  # the student renormalised over the teacher's k tokens
        s_p = torch.where(valid, s_log.exp(), torch.zeros_like(s_log))
        if kind == "reverse":
            terms = s_p * (s_log - t_log)
        else:
            m_log = torch.log((beta * t_p + (1 - beta) * s_p).clamp(min=1e-30))
            terms = beta * t_p * (t_log - m_log) + (1 - beta) * s_p * (s_log - m_log)
    terms = torch.where(valid, terms, torch.zeros_like(terms))
    return terms.sum(-1) * valid.any(-1)


class KDLoss(Objective):
    """alpha * cross-entropy + (1 - alpha) * tau^2 * divergence, per target token."""

    signals = ("topk",)

    def __init__(self, alpha: float, tau: float, kind: str, beta: float):
        self.alpha, self.tau, self.kind, self.beta = alpha, tau, kind, beta

    def loss(self, outputs: Any, labels: Any, batch: dict) -> Any:
        if self.alpha >= 1:
            return outputs.loss
        # logits at position i predict token i + 1; the teacher's top-k sit at the predicted token's position
        per_position = divergence(outputs.logits[:, :-1], batch["topk_ids"][:, 1:], batch["topk_logprobs"][:, 1:],
                                  self.tau, self.kind, self.beta)
        mask = labels[:, 1:] != -100
        kd = (per_position * mask).sum() / batch["num_items"]
        return self.alpha * outputs.loss + (1 - self.alpha) * self.tau ** 2 * kd


class LogitKD(Strategy):
    """The teacher's sampled rationales (filtered), learned token by token with its top-k distribution."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config
        self.format = STUDENT_FORMATS["token"]
        self.prediction_prefix = self.format.prediction_prefix
        self._stats: dict[str, int] = {}

    def prompt(self, example) -> str:
        return self.format.render_prompt(example.question)

    def stop(self) -> list[str]:
        return list(self.format.stop)

    def objective(self) -> Objective:
        c = self.config
        return KDLoss(c.alpha, c.temperature, c.divergence, c.beta)

    def build(self, examples, generations, task) -> list[TrainingExample]:
        out: list[TrainingExample] = []
        without = 0
        for e in examples:
            kept = [g for g in generations.get(e.id, ()) if passes_filter(g, self.config.filter)]
            if self.config.max_samples:
                kept = kept[: self.config.max_samples]
            for g in kept:
                signals = g.generation.meta.get("signals") or {}
                if "topk_ids" not in signals or "target_ids" not in signals:
                    without += 1
                    continue
                out.append(TrainingExample(e.id, self.prompt(e), self.format.render_target(
                    g.generation.rationale, g.generation.answer_text), signals=signals))
        tokens = sum(len(t.signals["target_ids"]) for t in out)
        self._stats = {"kept": len(out), "without_signals": without, "target_tokens": tokens}
        return out

    def stats(self) -> dict[str, int]:
        return dict(self._stats)


@hookimpl
def register_strategies(register):
    register("logit_kd", LogitKD)
