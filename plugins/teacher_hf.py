"""A teacher that runs a local transformers model (any directory or hub id): batched generation with sampling
(``num_return_sequences``), the same prompts as the ``openai`` teacher, and the same content-keyed cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import BadInputError, Example, Generation, Teacher, TeacherUsage, hookimpl, prompts
from harness.models import model_problems
from harness.cache import JsonlCache, content_key, default_cache_dir


@dataclass(frozen=True)
class Config(prompts.PromptOptions):
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``..."""
    cache_dir: str = ""

    def check(self) -> list[tuple[str, str]]:
        return prompts.check_options(self, ("samples", "batch_size", "max_tokens", "answer_max_tokens"))


class HFTeacher(Teacher):
    Config = Config

    def __init__(self, config: Config):
        self.config = config
        self._usage = TeacherUsage()

    def usage(self) -> TeacherUsage:
        return self._usage

    def preflight(self) -> list[tuple[str, str]]:
        return model_problems(self.config.model, "model")

    def generate(self, examples: Sequence[Example], task, progress) -> list[list[Generation]]:
        c = self.config
        exemplars = prompts.load_few_shot(Path(c.few_shot_file), c.few_shot_key) if c.prompt == "few_shot_cot" else ""
        trigger = task.answer.trigger
        cache_path = Path(c.cache_dir or default_cache_dir()) / "teacher" / (
            content_key(local_model=str(Path(c.model).resolve()) if Path(c.model).exists() else c.model)[:16] + ".jsonl")
        self._load()
        with JsonlCache(cache_path) as cache:
            self._cache = cache
            firsts = self._complete([prompts.first_prompt(c.prompt, e.question, exemplars) for e in examples],
                                    c.samples, c.temperature, c.max_tokens)
            parsed = [[prompts.parse_first(c.prompt, text) for text in texts] for texts in firsts]
            second = [(i, j, prompts.zero_shot_stage2(e.question, firsts[i][j], trigger))
                      for i, e in enumerate(examples) for j, (_, answer, _) in enumerate(parsed[i]) if answer is None]
            answers = self._complete([p for _, _, p in second], 1, 0.0, c.answer_max_tokens)
            filled = {(i, j): texts[0].strip() for (i, j, _), texts in zip(second, answers)}
            out = []
            for i, e in enumerate(examples):
                out.append([Generation(e.id, j, rationale, answer if answer is not None else filled[(i, j)],
                                       steps=steps) for j, (rationale, answer, steps) in enumerate(parsed[i])])
                progress(1)
            return out

    def _load(self) -> None:
        import torch
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
        device = c.device if c.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self._model.to(device).eval()
        self._device = device

    def _key(self, prompt: str, temperature: float, max_tokens: int, index: int) -> str:
        return content_key(model=self.config.model, prompt=prompt, temperature=temperature, max_tokens=max_tokens,
                           seed=self.config.seed, sample_index=index)

    def _complete(self, batch: list[str], n: int, temperature: float, max_tokens: int) -> list[list[str]]:
        """n completions for each prompt; cached ones are reused, the rest generated in batches."""
        import torch

        out: list[list[str | None]] = [[self._hit(p, temperature, max_tokens, j) for j in range(n)] for p in batch]
        todo = [i for i, texts in enumerate(out) if any(t is None for t in texts)]
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
                    num_return_sequences=n if sampling else 1, pad_token_id=self._tok.pad_token_id)
            texts = self._tok.batch_decode(generated[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            if not sampling:
                texts = [t for t in texts for _ in range(n)]
            self._usage.requests += len(chunk)
            for k, i in enumerate(chunk):
                for j in range(n):
                    if out[i][j] is None:
                        out[i][j] = texts[k * n + j]
                        self._cache.put(self._key(batch[i], temperature, max_tokens, j), {"text": out[i][j]})
        return out  # type: ignore[return-value]

    def _hit(self, prompt: str, temperature: float, max_tokens: int, index: int) -> str | None:
        hit = self._cache.get(self._key(prompt, temperature, max_tokens, index))
        if hit is not None:
            self._usage.cached += 1
            return hit["text"]
        return None


@hookimpl
def register_teachers(register):
    register("hf", HFTeacher)
