"""Token-level distillation: ``logit_kd`` and ``on_policy``.

One module, above the usual size, because the two strategies are one loss: ``on_policy``'s objective subclasses
``logit_kd``'s (``OnPolicyLoss(KDLoss)``) and its strategy subclasses ``LogitKD``, and both register from here;
the divergences (``buckets``, ``divergence``) are their shared core, tested against TRL. Split it where a third
token-level strategy would share that core.

``logit_kd``: the student learns the teacher's own sampled rationales, token by token, and matches the teacher's
distribution at every token, from the top-k log-probabilities the teacher recorded in the same pass that wrote the
text (``teacher.top_logprobs = k``).

Loss per target token, averaged over the target tokens (DistillKit's sparse KD, Hinton et al.'s temperature):

    loss = alpha * CE(student, teacher's token) + (1 - alpha) * tau^2 * D(teacher_k || student)

Both distributions are taken over k + 1 buckets, the teacher's k tokens and the tail (every other token),
so the student's mass outside the teacher's top-k counts (``buckets``); ``forward`` (default) is KL(teacher ||
student), ``reverse`` KL(student || teacher), ``jsd`` the generalised Jensen-Shannon divergence of GKD (Agarwal et
al. 2024). With the whole vocabulary as the top-k they are TRL's ``generalized_jsd_loss`` (docs/strategies.md).

With ``alpha = 1`` it is Fine-tune-CoT on the teacher's own tokens. Samples are filtered for correctness as
Fine-tune-CoT filters them. Teacher and student share a tokenizer (checked before any teacher call), or, with
``cross_tokenizer``, the teacher's tokens and alternatives are carried onto the student's by text
(``harness.alignment``; docs/strategies.md).

``on_policy``: generalised-JSD on-policy distillation (GKD, Agarwal et al. 2024). In each micro-batch a fraction
``fraction`` of the rows is replaced by continuations the student being trained samples from those rows'
prompts, which the teacher then scores (its top-k at every sampled token, ``Teacher.scorer``); the other rows are
the teacher's rationales with their recorded top-k. The loss is the divergence on every target token (plus
``alpha`` x cross-entropy, 0 by default); ``beta`` = 0 is the forward KL, 1 the reverse KL, in between the
generalised JSD. The train record reports the tokens sampled and the seconds spent sampling and scoring.
"""

from __future__ import annotations

import math
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
    format: str = "token"
    """The student format (``token``, ``natural``, ``think`` or one a plugin registers); the teacher must write in
    it (``teacher.prompt`` = this name, or ``fine_tune_cot`` for ``token``)."""
    top_k: int = 0
    """Use only the teacher's k most likely tokens of those it recorded (the rest joins the tail bucket); 0: all
    of them. Record once at a large k, train at several."""
    cross_tokenizer: bool = False
    """The student has its own tokenizer: the teacher's tokens and top-k alternatives are carried onto the
    student's tokens by text (``harness.alignment``); student tokens with no aligned teacher token learn by
    cross-entropy. Needs a teacher that records its tokens as text (``hf``, ``openai``)."""

    def check(self) -> list[tuple[str, str]]:
        problems = [] if self.top_k >= 0 else [("top_k", "must be 0 (all recorded) or more")]
        if self.format not in STUDENT_FORMATS:
            problems.append(("format", f"'{self.format}': choose from {', '.join(STUDENT_FORMATS)}"))
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


ZERO_LOG = math.log(1e-8)
"""Where a divergence needs the logarithm of a teacher probability that is 0 (a -inf log-probability, or no tail
left), it uses log 1e-8: a student putting mass there pays a large, finite price."""
TAIL_ROUNDING = 1e-6
"""A teacher tail smaller than this is rounding (4-decimal log-probabilities that sum to 1): no tail."""


def buckets(logits: Any, topk_ids: Any, topk_logprobs: Any, tau: float) -> tuple[Any, Any, Any]:
    """The teacher's and the student's log-probabilities over k + 1 buckets per position: the teacher's k tokens,
    then the tail (every other token of the vocabulary together), both at temperature ``tau``; and the positions
    that have a teacher signal.

    Teacher: its recorded top-k log-probabilities (at temperature 1) and the tail ``1 - sum p_k`` (0 when under
    ``TAIL_ROUNDING``), each divided by ``tau`` and renormalised over the k + 1 buckets (at tau = 1 nothing
    changes). Student: its softmax over the whole vocabulary at ``tau``, read at the k ids, and its remaining
    mass ``logsumexp(others) - logsumexp(all)``: exact, however much of it lies outside the teacher's top-k.
    Slots with id -1 are empty (probability 0 on both sides); a teacher log-probability of -inf is probability 0.
    """
    import torch

    present = topk_ids >= 0
    signal = present.any(-1)
    ids = topk_ids.clamp(min=0)
    neg_inf = torch.tensor(float("-inf"), device=logits.device)
    t_k = torch.where(present, topk_logprobs.double(), neg_inf.double())
    mass = torch.logsumexp(t_k, dim=-1).exp().clamp(max=1.0)
    tail = 1.0 - mass
    t_tail = torch.where(tail > TAIL_ROUNDING, torch.log(tail.clamp(min=1e-300)), neg_inf.double())
    teacher = torch.cat([t_k, t_tail.unsqueeze(-1)], dim=-1) / tau
    empty = torch.isneginf(teacher).all(-1, keepdim=True)  # no signal at this position: any finite placeholder
    teacher = torch.log_softmax(torch.where(empty, torch.zeros_like(teacher), teacher), dim=-1).float()

    scaled = logits.float() / tau
    total = torch.logsumexp(scaled, dim=-1, keepdim=True)
    s_k = torch.where(present, scaled.gather(-1, ids) - total, neg_inf)
    in_top = torch.zeros_like(scaled).scatter_add_(-1, ids, present.float()) > 0
    none_left = in_top.all(-1, keepdim=True)  # the top-k is the whole vocabulary: no tail (and no NaN gradient)
    rest = scaled.masked_fill(in_top, float("-inf")).masked_fill(none_left, 0.0)
    s_tail = torch.where(none_left, neg_inf, torch.logsumexp(rest, dim=-1, keepdim=True) - total)
    student = torch.cat([s_k, s_tail], dim=-1)
    return teacher, student, signal


def divergence(logits: Any, topk_ids: Any, topk_logprobs: Any, tau: float, kind: str, beta: float) -> Any:
    """Per position [batch, length]: the divergence between the teacher's top-k distribution (with its tail
    bucket) and the student's ``logits`` (same positions, [batch, length, vocab]) over the same k + 1 buckets
    (``buckets``). Positions without a teacher signal give 0.

    - ``forward``: KL(teacher || student) = sum p (log p - log q);
    - ``reverse``: KL(student || teacher) = sum q (log q - log p), log 0 read as ``ZERO_LOG`` for the teacher;
    - ``jsd``: beta KL(teacher || m) + (1 - beta) KL(student || m), m = beta p + (1 - beta) q (GKD's generalised
      JSD, as TRL computes it).

    When the k ids cover the whole vocabulary (no tail on either side), these are the full-vocabulary divergences
    TRL's ``generalized_jsd_loss`` computes from the same logits."""
    import torch

    t_log, s_log, signal = buckets(logits, topk_ids, topk_logprobs, tau)
    t_p, s_p = t_log.exp(), s_log.exp()
    t_has, s_has = t_p > 0, s_p > 0
    # logs of zero probabilities are replaced before any product (0 * -inf would be NaN, and so its gradient)
    t_safe = torch.where(t_has, t_log, torch.zeros_like(t_log))
    s_safe = torch.where(s_has, s_log, torch.zeros_like(s_log))
    if kind == "forward":
        terms = torch.where(t_has, t_p * (t_safe - s_log.clamp(min=-1e4)), torch.zeros_like(t_p))
    elif kind == "reverse":
        terms = torch.where(s_has, s_p * (s_safe - t_log.clamp(min=ZERO_LOG)), torch.zeros_like(s_p))
    else:
        # log m = log(beta p + (1 - beta) q), from finite stand-ins where a side is 0 (exp(-1e4) is 0 too)
        far = torch.full_like(t_log, -1e4)
        m_log = torch.logaddexp(torch.where(t_has, t_log + math.log(beta), far),
                                torch.where(s_has, s_log + math.log(1 - beta), far))
        m_safe = torch.where(t_has | s_has, m_log, torch.zeros_like(m_log))
        terms = torch.where(t_has, beta * t_p * (t_safe - m_safe), torch.zeros_like(t_p)) + \
            torch.where(s_has, (1 - beta) * s_p * (s_safe - m_safe), torch.zeros_like(s_p))
    return terms.sum(-1) * signal


class KDLoss(Objective):
    """alpha * cross-entropy + (1 - alpha) * tau^2 * divergence, per target token (each token of a pair weighted by
    the pair's ``weight``). Logs ``ce`` and ``kd`` (the train record's ``objective_log``)."""

    signals = ("topk",)

    def __init__(self, alpha: float, tau: float, kind: str, beta: float, cross_tokenizer: bool = False):
        self.alpha, self.tau, self.kind, self.beta = alpha, tau, kind, beta
        self.fallback = cross_tokenizer
        """Target tokens without a teacher signal learn by cross-entropy in the divergence's place."""
        if cross_tokenizer:
            self.signals = ("topk_text",)

    def loss(self, outputs: Any, labels: Any, batch: dict) -> Any:
        import torch
        import torch.nn.functional as F

        weights = batch.get("weights")
        weighted = weights is not None and bool((weights != 1).any())
        if self.alpha >= 1 and not weighted:
            return outputs.loss
        if self.fallback:
            return self._with_fallback(outputs, labels, batch, weights if weighted else None)
        mask = labels[:, 1:] != -100
        # a pair's weight (TrainingExample.weight) multiplies each of its tokens' terms
        row = weights.to(mask.device).float()[:, None] if weighted else torch.ones_like(mask, dtype=torch.float32)
        total = 0.0
        if self.alpha:
            if weighted:
                logits = outputs.logits[:, :-1].float()
                per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                            ignore_index=-100, reduction="none").view(mask.shape)
                ce = (per_token * mask * row).sum() / batch["num_items"]
            else:
                ce = outputs.loss  # the same sum over target tokens / num_items, as transformers computes it
            self.log("ce", float(ce.detach()))
            total = self.alpha * ce
        if self.alpha < 1:
            # logits at position i predict token i + 1; the teacher's top-k sit at the predicted token's position
            per_position = divergence(outputs.logits[:, :-1], batch["topk_ids"][:, 1:], batch["topk_logprobs"][:, 1:],
                                      self.tau, self.kind, self.beta)
            kd = (per_position * mask * row).sum() / batch["num_items"]
            self.log("kd", float(kd.detach()))
            total = total + (1 - self.alpha) * self.tau ** 2 * kd
        return total


    def _with_fallback(self, outputs: Any, labels: Any, batch: dict, weights: Any) -> Any:
        """Across tokenizers: alpha * CE + (1 - alpha) * (tau^2 * divergence where a teacher token is aligned,
        CE where none is); logs ``ce``, ``kd`` and ``aligned`` (the share of target tokens with a signal)."""
        import torch
        import torch.nn.functional as F

        mask = labels[:, 1:] != -100
        row = weights.to(mask.device).float()[:, None] if weights is not None else \
            torch.ones_like(mask, dtype=torch.float32)
        logits = outputs.logits[:, :-1]
        ce_token = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100, reduction="none").view(mask.shape)
        signal = (batch["topk_ids"][:, 1:] >= 0).any(-1)
        n = batch["num_items"]
        ce = (ce_token * mask * row).sum() / n
        total = self.alpha * ce
        self.log("ce", float(ce.detach()))
        if self.alpha < 1:
            per_position = divergence(logits, batch["topk_ids"][:, 1:], batch["topk_logprobs"][:, 1:], self.tau,
                                      self.kind, self.beta)
            kd = (per_position * mask * row).sum() / n
            rest = (ce_token * (mask & ~signal) * row).sum() / n
            self.log("kd", float(kd.detach()))
            total = total + (1 - self.alpha) * (self.tau ** 2 * kd + rest)
        self.log("aligned", float((signal & mask).sum()) / max(1, int(mask.sum())))
        return total


class LogitKD(FormattedStrategy):
    """The teacher's sampled rationales (filtered), learned token by token with its top-k distribution."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config
        self.format = STUDENT_FORMATS[config.format]
        self._stats: dict[str, int] = {}

    def objective(self) -> Objective:
        c = self.config
        return KDLoss(c.alpha, c.temperature, c.divergence, c.beta, c.cross_tokenizer)

    def build(self, examples, generations, task) -> list[TrainingExample]:
        out: list[TrainingExample] = []
        without = 0
        for e in examples:
            kept = [g for g in generations.get(e.id, ()) if passes_filter(g, self.config.filter)]
            if self.config.max_samples:
                kept = kept[: self.config.max_samples]
            for g in kept:
                signals = g.generation.meta.get("signals") or {}
                # one form of the teacher's tokens: as text (the student aligns it with its own), or as ids
                text_form = ("target_text", "topk_text", "topk_logprobs")
                signals = {k: v for k, v in signals.items()
                           if (k in text_form) == self.config.cross_tokenizer or k == "topk_logprobs"}
                needed = ("target_text", "topk_text") if self.config.cross_tokenizer else ("target_ids", "topk_ids")
                if any(n not in signals for n in needed):
                    without += 1
                    continue
                k = self.config.top_k
                if k:  # the recorded top-k are the teacher's most likely first
                    signals = {**signals, **{n: [row[:k] for row in signals[n]]
                                             for n in ("topk_ids", "topk_text", "topk_logprobs") if n in signals}}
                out.append(TrainingExample(e.id, self.prompt(e), self.format.render_target(
                    g.generation.rationale, g.generation.answer_text), signals=signals))
        tokens = sum(len(t.signals.get("target_ids") or t.signals["target_text"]) for t in out)  # the teacher's
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
    format: str = "token"
    """As ``logit_kd``'s: the student format, which the teacher writes in."""
    cross_tokenizer: bool = False
    """As ``logit_kd``'s; the teacher then scores the student's samples as text (a model teacher: ``hf``)."""

    def check(self) -> list[tuple[str, str]]:
        problems = [] if self.format in STUDENT_FORMATS else [
            ("format", f"'{self.format}': choose from {', '.join(STUDENT_FORMATS)}")]
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
        super().__init__(c.alpha, c.temperature, kind, c.beta, c.cross_tokenizer)
        if c.cross_tokenizer:
            self.signals = ("topk_text", "scores_text")
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
        if self.config.cross_tokenizer:
            top_ids, top_lps = self._score_text(prompts, continuations, width, labels.device)
        else:
            top_ids, top_lps = self.scorer.score(ids, attention, self.config.top_k)
        for j, i in enumerate(chosen):
            n, p = len(sequences[j]), len(prompts[j])
            target = torch.full((n,), -100, dtype=torch.long, device=labels.device)
            target[p:] = sequences[j][p:]
            rows[i] = [sequences[j], target, top_ids[j, :n], top_lps[j, :n]]
            self.sampled_tokens += n - p
        self.sampled_rows += len(chosen)
        return _pad(rows, batch, pad, max(self.config.top_k, batch["topk_ids"].shape[-1]))

    def _score_text(self, prompts: list, continuations: list, width: int, device: Any) -> tuple[Any, Any]:
        """Across tokenizers: the teacher scores each prompt + continuation as text; its top-k, carried onto the
        student's sampled tokens (``harness.alignment``), at the continuation's positions ([rows, width, k])."""
        import torch

        from harness import alignment

        tok, k = self.tokenizer, self.config.top_k
        eos = tok.eos_token_id
        heads = [tok.decode(p.tolist(), skip_special_tokens=True) for p in prompts]
        own = [alignment.teacher_text(tok, c.tolist()) for c in continuations]
        tails = ["".join(t for t in texts if t) for texts in own]
        ended = [bool(len(c)) and int(c[-1]) == eos for c in continuations]
        scored = self.scorer.score_text(heads, tails, ended, k)
        top_ids = torch.full((len(prompts), width, k), -1, dtype=torch.long, device=device)
        top_lps = torch.full((len(prompts), width, k), float("-inf"), device=device)
        for j, (p, c, signals) in enumerate(zip(prompts, continuations, scored)):
            mapped = alignment.to_student(signals, tok, ids=c.tolist())
            for t, (a, b) in enumerate(zip(mapped["topk_ids"], mapped["topk_logprobs"])):
                if a:
                    top_ids[j, len(p) + t, :len(a[:k])] = torch.tensor(a[:k])
                    top_lps[j, len(p) + t, :len(b[:k])] = torch.tensor(b[:k])
        return top_ids, top_lps

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
    # per-row values (the weights) keep their rows; per-token ones of other signals no longer fit the new rows
    kept = {k_: v for k_, v in batch.items() if not hasattr(v, "dim") or v.dim() <= 1}
    return {**kept,
            "input_ids": ids, "labels": labels, "attention_mask": attention, "topk_ids": top_ids,
            "topk_logprobs": top_lps}


class OnPolicy(LogitKD):
    """GKD: a share of every batch sampled by the student and scored by the teacher, the rest the teacher's
    rationales with their recorded top-k."""

    Config = OnPolicyConfig

    def __init__(self, config: OnPolicyConfig):
        super().__init__(Config(alpha=config.alpha, temperature=config.temperature, filter=config.filter,
                                max_samples=config.max_samples, format=config.format,
                                cross_tokenizer=config.cross_tokenizer))
        self.on_policy = config

    def objective(self) -> Objective:
        return OnPolicyLoss(self.on_policy)


@hookimpl
def register_strategies(register):
    register("logit_kd", LogitKD)
    register("on_policy", OnPolicy)
