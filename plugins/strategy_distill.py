"""Token-level distillation: ``logit_kd`` and ``on_policy``.

``logit_kd``: the student learns the teacher's own sampled rationales, token by token, and matches the teacher's
distribution at every token, from the top-k log-probabilities the teacher recorded in the same pass that wrote the
text (``teacher.top_logprobs = k``).

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

``on_policy``: generalised-JSD on-policy distillation (GKD, Agarwal et al. 2024). In each micro-batch a fraction
``fraction`` of the rows is replaced by continuations the student being trained samples from those rows'
prompts, which the teacher then scores (its top-k at every sampled token, ``Teacher.scorer``); the other rows are
the teacher's rationales with their recorded top-k. The loss is the divergence on every target token (plus
``alpha`` x cross-entropy, 0 by default); ``beta`` = 0 is the forward KL, 1 the reverse KL, in between the
generalised JSD. The train record reports the tokens sampled and the seconds spent sampling and scoring.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from harness import Objective, TrainingExample, hookimpl
from harness.answers import passes_filter
from harness.components import FormattedStrategy
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
        # with alpha = 0 the cross-entropy is left out of the graph (on-policy rows: the student's own tokens)
        return (self.alpha * outputs.loss if self.alpha else 0.0) + (1 - self.alpha) * self.tau ** 2 * kd


class LogitKD(FormattedStrategy):
    """The teacher's sampled rationales (filtered), learned token by token with its top-k distribution."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config
        self.format = STUDENT_FORMATS["token"]
        self._stats: dict[str, int] = {}

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
        for key, n in (("kept", len(out)), ("without_signals", without), ("target_tokens", tokens)):
            self._stats[key] = self._stats.get(key, 0) + n  # build is called once per chunk of questions
        return out

    def stats(self) -> dict[str, int]:
        return dict(self._stats)


@dataclass(frozen=True)
class OnPolicyConfig:
    fraction: float = 0.5
    """lambda: the share of each batch's rows the student samples itself (0: supervised KD only)."""
    beta: float = 0.5
    """0: forward KL (teacher || student); 1: reverse KL; in between: the generalised JSD with that mixture."""
    temperature: float = 1.0
    """tau of the divergence."""
    sample_temperature: float = 1.0
    """The student's sampling temperature for its on-policy continuations."""
    max_new_tokens: int = 64
    top_k: int = 8
    """How many of the teacher's tokens score each sampled position."""
    alpha: float = 0.0
    """Weight of the cross-entropy on the target tokens (the teacher's for supervised rows, the student's own for
    sampled ones); 0: the divergence only, as in GKD."""
    filter: bool = True
    max_samples: int = 0
    seed: int = 0

    def check(self) -> list[tuple[str, str]]:
        problems = []
        for key in ("fraction", "beta", "alpha"):
            if not 0 <= getattr(self, key) <= 1:
                problems.append((key, "must be in [0, 1]"))
        for key in ("temperature", "sample_temperature"):
            if getattr(self, key) <= 0:
                problems.append((key, "must be positive"))
        for key in ("max_new_tokens", "top_k"):
            if getattr(self, key) < 1:
                problems.append((key, "must be at least 1"))
        return problems


class OnPolicyLoss(KDLoss):
    """The KD loss over rows of which a share are the student's own samples, scored by the teacher."""

    signals = ("topk", "scores")

    def __init__(self, c: OnPolicyConfig):
        kind = "forward" if c.beta == 0 else "reverse" if c.beta == 1 else "jsd"
        super().__init__(c.alpha, c.temperature, kind, c.beta)
        self.config = c
        self.rng = random.Random(c.seed)
        self.sampled_rows = self.sampled_tokens = self.supervised_rows = 0
        self.sampling_seconds = 0.0
        self.last_samples: list[list[int]] = []
        """The continuations sampled for the last micro-batch (token ids), for inspection and tests."""

    def prepare(self, model: Any, batch: dict) -> dict:
        import torch

        labels = batch["labels"]
        chosen = [i for i in range(labels.shape[0]) if self.rng.random() < self.config.fraction]
        self.supervised_rows += labels.shape[0] - len(chosen)
        if not chosen:
            return batch
        mask = batch["attention_mask"]
        rows = []  # (ids, labels, topk_ids, topk_logprobs) per row, unpadded
        for i in range(labels.shape[0]):
            n = int(mask[i].sum())
            rows.append([batch["input_ids"][i, :n], labels[i, :n], batch["topk_ids"][i, :n],
                         batch["topk_logprobs"][i, :n]])
        prompts = [rows[i][0][: int((rows[i][1] == -100).sum())] for i in chosen]
        continuations = self.sample(model, prompts)
        self.last_samples = [c.tolist() for c in continuations]
        sequences = [torch.cat([p, c]) for p, c in zip(prompts, continuations)]
        width = max(len(s) for s in sequences)
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        ids = torch.full((len(sequences), width), pad, dtype=torch.long, device=labels.device)
        attention = torch.zeros_like(ids)
        for j, s in enumerate(sequences):
            ids[j, :len(s)], attention[j, :len(s)] = s, 1
        top_ids, top_lps = self.scorer.score(ids, attention, self.config.top_k)
        for j, i in enumerate(chosen):
            n, p = len(sequences[j]), len(prompts[j])
            target = torch.full((n,), -100, dtype=torch.long, device=labels.device)
            target[p:] = sequences[j][p:]
            rows[i] = [sequences[j], target, top_ids[j, :n], top_lps[j, :n]]
            self.sampled_tokens += n - p
        self.sampled_rows += len(chosen)
        return _pad(rows, batch, pad, max(self.config.top_k, batch["topk_ids"].shape[-1]))

    def sample(self, model: Any, prompts: list) -> list:
        """Continuations sampled by ``model`` (the student being trained) for each prompt, up to and including
        EOS, as token-id tensors."""
        import torch

        started = time.perf_counter()
        c, config = self.config, model.config
        width = max(len(p) for p in prompts)
        pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=prompts[0].device)
        attention = torch.zeros_like(ids)
        for j, p in enumerate(prompts):  # left-padded, so every continuation starts at the same column
            ids[j, width - len(p):], attention[j, width - len(p):] = p, 1
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=attention, do_sample=True,
                                     temperature=c.sample_temperature, top_k=0, max_new_tokens=c.max_new_tokens,
                                     pad_token_id=pad, eos_token_id=config.eos_token_id)
        finally:
            model.train(was_training)
        continuations = []
        for row in out[:, width:]:
            tokens = row.tolist()
            end = tokens.index(config.eos_token_id) + 1 if config.eos_token_id in tokens else len(tokens)
            continuations.append(row[:max(1, end)])
        self.sampling_seconds += time.perf_counter() - started
        return continuations

    def close(self) -> None:
        close = getattr(self.scorer, "close", None)  # a served scorer stops its server
        if callable(close):
            close()

    def stats(self) -> dict[str, Any]:
        return {"sampled_rows": self.sampled_rows, "supervised_rows": self.supervised_rows,
                "sampled_tokens": self.sampled_tokens, "sampling_seconds": round(self.sampling_seconds, 2),
                "scoring_seconds": round(getattr(self.scorer, "seconds", 0.0), 2)}


def _pad(rows: list, batch: dict, pad: int, k: int) -> dict:
    """Rows (ids, labels, top-k ids, top-k log-probabilities) padded on the right into a new batch."""
    import torch

    width = max(len(r[0]) for r in rows)
    device = batch["labels"].device
    ids = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    labels = torch.full((len(rows), width), -100, dtype=torch.long, device=device)
    attention = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    top_ids = torch.full((len(rows), width, k), -1, dtype=torch.long, device=device)
    top_lps = torch.full((len(rows), width, k), float("-inf"), device=device)
    for i, (seq, lab, tid, tlp) in enumerate(rows):
        n, kk = len(seq), tid.shape[-1]
        ids[i, :n], labels[i, :n], attention[i, :n] = seq, lab, 1
        top_ids[i, :n, :kk], top_lps[i, :n, :kk] = tid, tlp
    return {**{k_: v for k_, v in batch.items() if k_ not in ("input_ids", "labels", "attention_mask", "topk_ids",
                                                                 "topk_logprobs")},
            "input_ids": ids, "labels": labels, "attention_mask": attention, "topk_ids": top_ids,
            "topk_logprobs": top_lps}


class OnPolicy(LogitKD):
    """GKD: a share of every batch sampled by the student and scored by the teacher, the rest the teacher's
    rationales with their recorded top-k."""

    Config = OnPolicyConfig

    def __init__(self, config: OnPolicyConfig):
        super().__init__(Config(alpha=config.alpha, temperature=config.temperature, filter=config.filter,
                                max_samples=config.max_samples))
        self.on_policy = config

    def objective(self) -> Objective:
        return OnPolicyLoss(self.on_policy)


@hookimpl
def register_strategies(register):
    register("logit_kd", LogitKD)
    register("on_policy", OnPolicy)
