"""A teacher that runs a local transformers model (any directory or hub id): batched generation with sampling
(``num_return_sequences``), the same prompts as the ``openai`` teacher, and the same content-keyed cache."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import BadInputError, Example, Generation, Teacher, TeacherUsage, alignment, hookimpl, prompts
from harness.cache import JsonlCache, content_key, default_cache_dir
from harness.models import DTYPES, model_problems, place, resolve_device, resolve_dtype, tokenizer_vocabulary


@dataclass(frozen=True)
class Config(prompts.PromptOptions):
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``..."""
    dtype: str = "auto"
    """``auto`` (bfloat16 on a GPU that supports it, else float32), ``float32``, ``bfloat16``, ``float16``."""
    cache_dir: str = ""

    def check(self) -> list[tuple[str, str]]:
        problems = prompts.check_options(self, ("samples", "batch_size", "max_tokens", "answer_max_tokens"))
        if self.dtype not in DTYPES:
            problems.append(("dtype", f"'{self.dtype}' is not a dtype; use {', '.join(DTYPES)}"))
        return problems


class HFTeacher(Teacher):
    Config = Config

    def __init__(self, config: Config):
        self.config = config
        self._usage = TeacherUsage()

    def usage(self) -> TeacherUsage:
        return self._usage

    def preflight(self) -> list[tuple[str, str]]:
        return model_problems(self.config.model, "model")

    def signals(self) -> tuple[str, ...]:
        """``topk`` (ids) and ``topk_text`` (the same as text) with ``top_logprobs``; ``scores`` and
        ``scores_text`` always (a local model scores new text during training, in the student's ids or, across
        tokenizers, as text)."""
        scores = ("scores", "scores_text")
        return ("topk", "topk_text", *scores) if self.config.top_logprobs else scores

    def scorer(self) -> "Scorer":
        return Scorer(self.config.model, self.config.device)

    def vocabulary(self) -> str | None:
        return tokenizer_vocabulary(self.config.model)

    def generate(self, examples: Sequence[Example], task, progress) -> list[list[Generation]]:
        c = self.config
        exemplars = prompts.load_few_shot(Path(c.few_shot_file), c.few_shot_key) if c.prompt == "few_shot_cot" else ""
        trigger = task.answer.trigger
        model_id = str(Path(c.model).resolve()) if Path(c.model).exists() else c.model
        cache_path = Path(c.cache_dir or default_cache_dir()) / "teacher" / (content_key(local_model=model_id)[:16]
                                                                             + ".jsonl")
        with JsonlCache(cache_path) as cache:
            self._cache = cache
            firsts = self._complete([prompts.first_prompt(c.prompt, e.question, exemplars) for e in examples],
                                    c.samples, c.temperature, c.max_tokens, c.top_logprobs)
            parsed = [[prompts.parse_first(c.prompt, r["text"]) for r in records] for records in firsts]
            second = [(i, j, prompts.zero_shot_stage2(e.question, firsts[i][j]["text"], trigger))
                      for i, e in enumerate(examples) for j, (_, answer, _) in enumerate(parsed[i]) if answer is None]
            answers = self._complete([p for _, _, p in second], 1, 0.0, c.answer_max_tokens)
            filled = {(i, j): records[0]["text"].strip() for (i, j, _), records in zip(second, answers)}
            out = []
            for i, e in enumerate(examples):
                gens = []
                for j, (rationale, answer, steps) in enumerate(parsed[i]):
                    signals = self._with_text({k: v for k, v in firsts[i][j].items() if k != "text"})
                    gens.append(Generation(e.id, j, rationale, answer if answer is not None else filled[(i, j)],
                                           steps=steps, meta={"signals": signals} if signals else {}))
                out.append(gens)
                progress(1)
            return out

    def _with_text(self, signals: dict) -> dict:
        """The recorded ids, and the same tokens and alternatives as text (``harness.alignment``), for students
        with another tokenizer."""
        if "target_ids" not in signals:
            return signals
        if getattr(self, "_tok", None) is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.config.model)  # a cached re-run loads no model
        return {**signals, "target_text": alignment.teacher_text(self._tok, signals["target_ids"]),
                "topk_text": alignment.alternative_texts(self._tok, signals["topk_ids"])}

    @functools.cached_property
    def _resolved_dtype(self) -> str:
        """The dtype the model runs in, resolved once (every cache key names it)."""
        return resolve_dtype(self.config.dtype, resolve_device(self.config.device))

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        c = self.config
        try:
            self._tok = AutoTokenizer.from_pretrained(c.model)
            self._model = AutoModelForCausalLM.from_pretrained(c.model)
        except (OSError, ValueError) as exc:
            raise BadInputError(f"teacher.model: cannot load '{c.model}': {str(exc).splitlines()[0]}") from None
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._usage.placement = place(self._model, c.device, c.dtype)
        self._model.eval()
        self._device = self._model.device

    def _key(self, prompt: str, temperature: float, max_tokens: int, index: int, top: int) -> str:
        extra = {"top_logprobs": top} if top else {}  # caches written without top-k stay valid
        if self._resolved_dtype != "float32":  # bfloat16 samples differ from float32 ones (the earlier default)
            extra["dtype"] = self._resolved_dtype
        return content_key(model=self.config.model, prompt=prompt, temperature=temperature, max_tokens=max_tokens,
                           seed=self.config.seed, sample_index=index, **extra)

    def _complete(self, batch: list[str], n: int, temperature: float, max_tokens: int,
                  top: int = 0) -> list[list[dict]]:
        """n completions for each prompt (``{"text"}``, plus the teacher's tokens and top-k log-probabilities per
        token when ``top`` > 0); cached ones are reused, the rest generated in batches."""
        import torch

        out: list[list[dict | None]] = [[self._hit(p, temperature, max_tokens, j, top) for j in range(n)]
                                        for p in batch]
        todo = [i for i, records in enumerate(out) if any(r is None for r in records)]
        if todo and getattr(self, "_model", None) is None:
            self._load()  # only when something is not cached: a cached re-run loads no model
        for start in range(0, len(todo), self.config.batch_size):
            chunk = todo[start: start + self.config.batch_size]
            enc = self._tok([batch[i] for i in chunk], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(self._device)
            torch.manual_seed(self.config.seed + start)
            sampling = temperature > 0
            with torch.no_grad():  # greedy samples are all the same text: generate one and repeat it
                generated = self._model.generate(
                    **enc, max_new_tokens=max_tokens, do_sample=sampling,
                    temperature=temperature if sampling else None, top_k=0 if sampling else None,
                    num_return_sequences=n if sampling else 1, pad_token_id=self._tok.pad_token_id,
                    return_dict_in_generate=True, output_logits=bool(top))
            new = generated.sequences[:, enc["input_ids"].shape[1]:]
            records = [{"text": t} for t in self._tok.batch_decode(new, skip_special_tokens=True)]
            if top:
                logprobs = torch.log_softmax(torch.stack(generated.logits, dim=1).float(), dim=-1)
                values, indices = logprobs.topk(top, dim=-1)  # [rows, steps, k], once for the whole batch
                for row, record in enumerate(records):
                    record.update(token_signals(new[row], indices[row], values[row], self._tok.eos_token_id))
            if not sampling:
                records = [r for r in records for _ in range(n)]
            self._usage.requests += len(chunk)
            self._usage.output_tokens += int((new != self._tok.pad_token_id).sum())
            for k, i in enumerate(chunk):
                for j in range(n):
                    if out[i][j] is None:
                        out[i][j] = records[k * n + j]
                        self._cache.put(self._key(batch[i], temperature, max_tokens, j, top), out[i][j])
        return out  # type: ignore[return-value]

    def _hit(self, prompt: str, temperature: float, max_tokens: int, index: int, top: int) -> dict | None:
        hit = self._cache.get(self._key(prompt, temperature, max_tokens, index, top))
        if hit is not None:
            self._usage.cached += 1
        return hit


class Scorer:
    """The teacher scoring text during training (on-policy distillation): its top-k next-token log-probabilities
    at every position of given sequences, in one forward pass. Loaded on first use, on the training device."""

    def __init__(self, model: str, device: str):
        self.name, self.device, self.model, self.tokenizer = model, device, None, None
        self.seconds = 0.0

    def score(self, input_ids, attention_mask, k: int):
        import time

        import torch
        from transformers import AutoModelForCausalLM

        started = time.perf_counter()
        if self.model is None:
            self.model = AutoModelForCausalLM.from_pretrained(self.name).to(input_ids.device).eval()
        with torch.no_grad():
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        values, indices = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
        ids = torch.full_like(indices, -1)
        logprobs = torch.full_like(values, float("-inf"))
        ids[:, 1:], logprobs[:, 1:] = indices[:, :-1], values[:, :-1]  # position j: the prediction of token j
        self.seconds += time.perf_counter() - started
        return ids, logprobs

    def score_text(self, prompts: Sequence[str], continuations: Sequence[str], ended: Sequence[bool],
                   k: int) -> list[dict]:
        """Across tokenizers: the teacher reads each prompt and continuation (text, in its own tokens; its EOS
        after a continuation that ``ended``) and gives, for each continuation, its tokens and top-k as text
        (``target_text``, ``topk_text``, ``topk_logprobs``: ``harness.alignment``), in one forward pass."""
        import time

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        if self.model is None:
            self.model = AutoModelForCausalLM.from_pretrained(self.name).to(resolve_device(self.device)).eval()
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(self.name)
        tok = self.tokenizer
        heads = tok(list(prompts), add_special_tokens=False)["input_ids"]
        tails = tok(list(continuations), add_special_tokens=False)["input_ids"]
        tails = [t + [tok.eos_token_id] if end and tok.eos_token_id is not None else t for t, end in zip(tails, ended)]
        width = max(len(h) + len(t) for h, t in zip(heads, tails))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        ids = torch.full((len(heads), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, (h, t) in enumerate(zip(heads, tails)):
            ids[i, :len(h) + len(t)], mask[i, :len(h) + len(t)] = torch.tensor(h + t), 1
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        values, indices = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
        out = []
        for i, (h, t) in enumerate(zip(heads, tails)):
            rows = slice(len(h) - 1, len(h) + len(t) - 1)  # position j - 1 predicts token j
            top = indices[i, rows].tolist()
            out.append({"target_text": alignment.teacher_text(tok, t),
                        "topk_text": alignment.alternative_texts(tok, top),
                        "topk_logprobs": [[round(x, 4) for x in row] for row in values[i, rows].tolist()]})
        self.seconds += time.perf_counter() - started
        return out


def token_signals(ids, top_ids, top_logprobs, eos: int | None) -> dict:
    """One generated sequence's tokens up to and including EOS (``target_ids``), and at each of them the teacher's
    k most likely tokens with their log-probabilities at temperature 1 (``topk_ids``, ``topk_logprobs``, 4
    decimals: about 100 bytes a token in JSON for k = 8). Rows that stopped early are padded after their EOS."""
    tokens = ids.tolist()
    end = tokens.index(eos) + 1 if eos is not None and eos in tokens else len(tokens)
    return {"target_ids": tokens[:end], "topk_ids": top_ids[:end].tolist(),
            "topk_logprobs": [[round(x, 4) for x in row] for row in top_logprobs[:end].tolist()]}


@hookimpl
def register_teachers(register):
    register("hf", HFTeacher)
