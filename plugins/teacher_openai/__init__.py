"""A teacher behind any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, TGI, ``transformers serve``).

Prompting: Zero-shot-CoT in two stages (rationale, then the answer with the task's trigger), Few-shot-CoT from
exemplars, or a decomposition into Socratic (sub-question, answer) pairs. Diverse reasoning asks for ``samples``
completions per question through ``n`` and falls back to separate requests for any the server did not return.

Every completion is cached by content (endpoint, model, prompt, parameters, sample index) in an append-only
JSON Lines file, so a re-run makes no request for finished work and a killed run loses only requests in flight.
Requests run concurrently (at most ``concurrency`` at once) with retries: exponential backoff with jitter that
honours ``Retry-After``, a timeout, and a cap on attempts. An error no retry can fix (bad key, unknown model,
bad request) stops the run at once with its message; a request that keeps failing is recorded as a failure
(an empty generation with ``meta.error``) and is retried by the next run.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import BadInputError, Example, Generation, Teacher, TeacherEstimate, TeacherUsage, hookimpl
from harness import prompts, secrets, serve
from harness.cache import JsonlCache, content_key, default_cache_dir
from harness.errors import RunError
from harness.models import tokenizer_vocabulary

from .batch import BatchPhase, Pending



@dataclass(frozen=True)
class Config(prompts.PromptOptions):
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key; empty for servers that need none."""
    endpoint: str = "completions"
    """``completions`` or ``chat``."""
    stop: tuple[str, ...] = ()
    seed: int | None = None
    use_n: bool = True
    """Ask for all samples in one request (``n``); false sends one request per sample."""
    concurrency: int = 32
    timeout: float = 60.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    cache_dir: str = ""
    """Default ``$HARNESS_CACHE_DIR`` or ``~/.cache/harness``."""
    price_per_million_input: float = 0.0
    price_per_million_output: float = 0.0
    extra_body: dict[str, Any] = field(default_factory=dict)
    serve: str = ""
    """A command that serves ``model`` (a local model folder) on 127.0.0.1, started and stopped by the teacher, e.g.
    ``"/opt/vllm/bin/vllm serve {model} --host 127.0.0.1 --port {port} --max-model-len 256"``; ``base_url`` and
    ``api_key_env`` are then not used. Its log goes to ``<cache_dir>/serve/``."""
    batch: bool = False
    """Send the requests through the OpenAI Batch API (half price at OpenAI, results within 24 hours): one batch
    for the rationales, one for Zero-shot-CoT's answers, each resumed after a kill without being submitted
    twice; what a failed or expired batch did not answer is then asked directly."""
    batch_poll_seconds: float = 30.0
    batch_price_factor: float = 0.5
    """What batch tokens cost relative to the prices above (OpenAI: half)."""
    tokenizer: str = ""
    """The served model's tokenizer (folder or hub id). Needed with ``top_logprobs``: it maps the server's tokens to
    ids (vLLM gives ids itself: ``return_tokens_as_token_ids`` is asked for), gives the EOS id, and lets the
    harness check that the student shares the vocabulary."""

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.endpoint not in ("completions", "chat"):
            problems.append(("endpoint", f"'{self.endpoint}': use \"completions\" or \"chat\""))
        problems += prompts.check_options(self, ("samples", "concurrency", "max_attempts", "max_tokens",
                                                 "answer_max_tokens"))
        if self.timeout <= 0:
            problems.append(("timeout", "must be positive"))
        if self.api_key_env and not secrets.ENV_NAME.match(self.api_key_env):  # never echo it: it may be the key
            problems.append(("api_key_env", "must be the NAME of an environment variable (letters, digits, _), "
                                            "e.g. \"OPENAI_API_KEY\"; if you put the key itself here, remove it, "
                                            "export it (export OPENAI_API_KEY=...) and name the variable"))
        if secrets.url_has_credentials(self.base_url):
            problems.append(("base_url", "holds credentials (user:password@); remove them from the URL and put the "
                                         "key in the environment variable named by api_key_env"))
        problems += [(path, "looks like a secret: keys never go in a recipe; put it in the environment variable "
                            "named by api_key_env") for path in secrets.secret_keys(self.extra_body, "extra_body")]
        if self.serve:
            problems += serve.command_problems(self.serve, "serve")
        if self.batch and self.serve:
            problems.append(("batch", "a server the teacher starts itself (serve) answers requests directly; set "
                                      "batch = false, or point base_url at a server with the Batch API"))
        if self.batch_poll_seconds <= 0:
            problems.append(("batch_poll_seconds", "must be positive"))
        if self.top_logprobs and not self.tokenizer:
            problems.append(("tokenizer", "top_logprobs needs the served model's tokenizer (its folder or hub id) "
                                          "to map the server's tokens to ids"))
        return problems


class Fatal(Exception):
    """A request no retry can fix."""


class OpenAITeacher(Teacher):
    Config = Config

    def __init__(self, config: Config):
        self.config = config
        if config.api_key_env and secrets.ENV_NAME.match(config.api_key_env):
            secrets.register(os.environ.get(config.api_key_env))  # never written anywhere from now on
        self._usage = TeacherUsage()
        self._batch_tokens = [0, 0]
        self._exemplars = ""
        self._tok = None
        self._endpoint = f"served:{config.model}" if config.serve else config.base_url
        """What the cache keys name: the URL, or for a server the teacher starts (a new port each time) the model."""

    # Public: the batch interface ---------------------------------------------------------------------------

    def generate(self, examples: Sequence[Example], task, progress) -> list[list[Generation]]:
        c = self.config
        if c.prompt == "few_shot_cot":
            self._exemplars = prompts.load_few_shot(Path(c.few_shot_file), c.few_shot_key)
        trigger = task.answer.trigger
        folder = Path(c.cache_dir or default_cache_dir())
        with JsonlCache(self._cache_path()) as cache:
            if c.batch:
                progress = self._batches(examples, trigger, cache, progress, folder / "batches")
            if not c.serve:
                return asyncio.run(self._generate_all(examples, trigger, cache, progress, c.base_url))
            log = folder / "serve" / (content_key(model=c.model)[:16] + ".log")
            with serve.managed_server(c.serve, c.model, log) as base_url:
                return asyncio.run(self._generate_all(examples, trigger, cache, progress, base_url))

    def estimate(self, examples: Sequence[Example], task) -> TeacherEstimate:
        """The requests ``generate`` would send (the same cache keys, ``n`` requests and in-flight deduplication),
        their prompt tokens (counted with ``tokenizer`` when given, else about 4 characters a token) and at most
        ``max_tokens`` output tokens per completion; a Zero-shot-CoT answer request whose rationale is not yet
        known is counted with the longest rationale ``max_tokens`` allows."""
        c = self.config
        exemplars = prompts.load_few_shot(Path(c.few_shot_file), c.few_shot_key) if c.prompt == "few_shot_cot" else ""
        tok = self._tokenizer() if c.tokenizer else None
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
        with JsonlCache(self._cache_path()) as cache:
            for e in examples:
                prompt = prompts.first_prompt(c.prompt, e.question, exemplars)
                keys = [self._key(prompt, c.temperature, c.max_tokens, i, c.top_logprobs) for i in range(c.samples)]
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
                        key = self._key(stage2, 0.0, c.answer_max_tokens, 0)
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

    def _cache_path(self) -> Path:
        c = self.config
        folder = Path(c.cache_dir or default_cache_dir())
        return folder / "teacher" / (content_key(base_url=self._endpoint, model=c.model)[:16] + ".jsonl")

    def signals(self) -> tuple[str, ...]:
        """``topk`` with ``top_logprobs``; ``scores`` when the teacher serves its model itself (vLLM's prompt
        log-probabilities score new text during training)."""
        return (("topk",) if self.config.top_logprobs else ()) + (("scores",) if self.config.serve else ())

    def scorer(self) -> "serve.ServedScorer | None":
        c = self.config
        if not c.serve:
            return None
        log = Path(c.cache_dir or default_cache_dir()) / "serve" / (content_key(model=c.model)[:16] + "-score.log")
        return serve.ServedScorer(c.serve, c.model, log)

    def vocabulary(self) -> str | None:
        return tokenizer_vocabulary(self.config.tokenizer) if self.config.tokenizer else None

    def usage(self) -> TeacherUsage:
        u, c = self._usage, self.config
        batch_in, batch_out = self._batch_tokens
        u.cost = round(((u.input_tokens - batch_in + c.batch_price_factor * batch_in) * c.price_per_million_input
                        + (u.output_tokens - batch_out + c.batch_price_factor * batch_out)
                        * c.price_per_million_output) / 1e6, 6)
        return u

    # The Batch API ----------------------------------------------------------------------------------------

    def _batches(self, examples, trigger: str, cache: JsonlCache, progress, folder: Path):
        """Fill the cache through the Batch API: the rationales, then the answer requests they lead to. Return the
        progress callback for the rest of the stage (the batches took the bar to its end; what follows only
        finishes it)."""
        from openai import OpenAI

        c = self.config
        key = os.environ.get(c.api_key_env, "") if c.api_key_env else "none"
        if c.api_key_env and not key:
            raise BadInputError(f"teacher.api_key_env: the environment variable {c.api_key_env} is not set")
        client = OpenAI(base_url=c.base_url, api_key=key, max_retries=c.max_attempts, timeout=c.timeout)
        total, shown = len(examples), [0]

        def advance_to(n: int) -> None:
            n = min(total, n)
            if n > shown[0]:
                progress(n - shown[0])
                shown[0] = n

        two_phases = c.prompt in ("zero_shot_cot", "few_shot_cot")
        share = total // 2 if two_phases else total
        phase = BatchPhase(client, c.endpoint, folder, c.batch_poll_seconds,
                           lambda done, of: advance_to(share * done // max(of, 1)))
        exemplars = self._exemplars
        seen: set[str] = set()
        first = []
        for e in examples:
            prompt = prompts.first_prompt(c.prompt, e.question, exemplars)
            keys = [self._key(prompt, c.temperature, c.max_tokens, i, c.top_logprobs) for i in range(c.samples)]
            missing = [i for i, k in enumerate(keys) if k not in cache and k not in seen]
            seen.update(keys[i] for i in missing)
            if len(missing) > 1 and c.use_n:
                first.append(Pending(self._body(prompt, len(missing), c.temperature, c.max_tokens, 0,
                                                c.top_logprobs), tuple(keys[i] for i in missing)))
            else:
                first += [Pending(self._body(prompt, 1, c.temperature, c.max_tokens, i, c.top_logprobs), (keys[i],))
                          for i in missing]
        self._merge(first, *phase.run(first), cache, c.top_logprobs)
        if two_phases:
            phase.tick = lambda done, of: advance_to(share + (total - share) * done // max(of, 1))
            second = []
            for e in examples:
                prompt = prompts.first_prompt(c.prompt, e.question, exemplars)
                for i in range(c.samples):
                    hit = cache.get(self._key(prompt, c.temperature, c.max_tokens, i, c.top_logprobs))
                    if hit is None or prompts.parse_first(c.prompt, hit["text"])[1] is not None:
                        continue
                    stage2 = prompts.zero_shot_stage2(e.question, hit["text"], trigger)
                    k = self._key(stage2, 0.0, c.answer_max_tokens, 0)
                    if k not in cache and k not in seen:
                        seen.add(k)
                        second.append(Pending(self._body(stage2, 1, 0.0, c.answer_max_tokens, 0, 0), (k,)))
            self._merge(second, *phase.run(second), cache, 0)
        self._usage.batches += phase.ids
        advance_to(total)
        return lambda k: advance_to(shown[0] + k)

    def _body(self, prompt: str, n: int, temperature: float, max_tokens: int, index: int, top: int) -> dict:
        """A batch line's request body: what ``_request`` sends, with ``extra_body`` merged in."""
        params, extra_body = self._params(n, temperature, max_tokens, index, top)
        text = {"messages": [{"role": "user", "content": prompt}]} if self.config.endpoint == "chat" else \
            {"prompt": prompt}
        return {**params, **extra_body, **text}

    def _merge(self, pending: list, bodies: dict[str, dict], status: str, cache: JsonlCache, top: int) -> None:
        from openai.types import Completion
        from openai.types.chat import ChatCompletion

        chat = self.config.endpoint == "chat"
        for p in pending:
            body = bodies.get(p.custom_id)
            if body is None:
                continue
            try:
                r = (ChatCompletion if chat else Completion).model_validate(body)
                texts = [ch.message.content for ch in r.choices] if chat else [ch.text for ch in r.choices]
                records = [{"text": t} for t in texts if isinstance(t, str)]
                if top:
                    for record, choice in zip(records, r.choices):
                        record.update(self._signals(choice, top))
            except (ValueError, TypeError, Fatal):
                continue  # asked again directly
            for k, record in zip(p.keys, records):
                cache.put(k, record)
            self._usage.batched += len(records)
            if r.usage is not None:
                self._usage.input_tokens += r.usage.prompt_tokens or 0
                self._usage.output_tokens += r.usage.completion_tokens or 0
                self._batch_tokens[0] += r.usage.prompt_tokens or 0
                self._batch_tokens[1] += r.usage.completion_tokens or 0
        if pending:
            self._usage.requests += len(pending)

    # The flow per example ---------------------------------------------------------------------------------

    async def _generate_all(self, examples, trigger, cache, progress, base_url: str) -> list[list[Generation]]:
        from openai import AsyncOpenAI

        c = self.config
        key = os.environ.get(c.api_key_env, "") if c.api_key_env and not c.serve else "none"
        if c.api_key_env and not c.serve and not key:
            raise BadInputError(f"teacher.api_key_env: the environment variable {c.api_key_env} is not set "
                                "(set it, or api_key_env = \"\" for a server that needs no key)")
        client = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=c.timeout)
        self._client, self._cache, self._gate = client, cache, asyncio.Semaphore(c.concurrency)
        self._inflight: dict[str, asyncio.Future] = {}
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._example(e, trigger, progress)) for e in examples]
        except* Fatal as fatal:
            raise BadInputError(f"teacher: {fatal.exceptions[0]}") from None
        finally:
            await client.close()
        return [t.result() for t in tasks]

    async def _example(self, example: Example, trigger: str, progress) -> list[Generation]:
        c = self.config
        prompt = prompts.first_prompt(c.prompt, example.question, self._exemplars)
        first = await self._samples(prompt, c.samples, c.temperature, c.max_tokens, c.top_logprobs)
        out = await asyncio.gather(*(self._finish(example, i, r, trigger) for i, r in enumerate(first)))
        progress(1)
        return list(out)

    async def _finish(self, example: Example, index: int, record: dict | Exception, trigger: str) -> Generation:
        if isinstance(record, Exception):
            return Generation(example.id, index, "", "", meta={"error": str(record)})
        text = record["text"]
        signals = {k: v for k, v in record.items() if k != "text"}
        rationale, answer, steps = prompts.parse_first(self.config.prompt, text)
        if answer is None:  # Zero-shot-CoT stage 2: ask for the answer after the task's trigger
            stage2 = prompts.zero_shot_stage2(example.question, text, trigger)
            (reply,) = await self._samples(stage2, 1, 0.0, self.config.answer_max_tokens)
            if isinstance(reply, Exception):
                return Generation(example.id, index, rationale, "", meta={"error": str(reply)})
            answer = reply["text"].strip()
        return Generation(example.id, index, rationale, answer, steps=steps,
                          meta={"signals": signals} if signals else {})

    # Requests: cache, n / separate samples, retries ---------------------------------------------------------

    def _key(self, prompt: str, temperature: float, max_tokens: int, index: int, top: int = 0) -> str:
        c = self.config
        extra = {"top_logprobs": top} if top else {}  # caches written without top-k stay valid
        return content_key(base_url=self._endpoint, endpoint=c.endpoint, model=c.model, prompt=prompt,
                           temperature=temperature, max_tokens=max_tokens, stop=list(c.stop), seed=c.seed,
                           extra_body=c.extra_body, sample_index=index, **extra)

    async def _samples(self, prompt: str, n: int, temperature: float, max_tokens: int,
                       top: int = 0) -> list[dict | Exception]:
        """``n`` completions of ``prompt`` (sample indices 0..n-1): from the cache, from a request already in
        flight for the same key (never sent twice), else asked for, all missing ones in one ``n`` request when
        the server allows, separately for any it did not return."""
        keys = [self._key(prompt, temperature, max_tokens, i, top) for i in range(n)]
        out: list[str | Exception | None] = [None] * n
        waiting: dict[int, asyncio.Future] = {}
        for i, k in enumerate(keys):
            hit = self._cache.get(k)
            if hit is not None:
                out[i] = hit
                self._usage.cached += 1
            elif k in self._inflight:
                waiting[i] = self._inflight[k]
                self._usage.deduplicated += 1
        mine = [i for i in range(n) if out[i] is None and i not in waiting]
        futures = {i: asyncio.get_running_loop().create_future() for i in mine}
        for i, f in futures.items():
            self._inflight[keys[i]] = f
        try:
            missing = mine
            if len(missing) > 1 and self.config.use_n:
                records = await self._request(prompt, len(missing), temperature, max_tokens, 0, top)
                if not isinstance(records, Exception):
                    for i, record in zip(missing, records):
                        self._cache.put(keys[i], record)
                        out[i] = record
                missing = [i for i in mine if out[i] is None]  # fewer choices than asked: ask separately
            results = await asyncio.gather(*(self._request(prompt, 1, temperature, max_tokens, i, top)
                                             for i in missing))
            for i, records in zip(missing, results):
                if isinstance(records, Exception):
                    out[i] = records
                    self._usage.failed += 1
                else:
                    self._cache.put(keys[i], records[0])
                    out[i] = records[0]
        finally:
            for i, f in futures.items():  # whoever waits on these gets the same outcome
                self._inflight.pop(keys[i], None)
                if not f.done():
                    f.set_result(out[i] if out[i] is not None else RunError("request cancelled"))
        for i, f in waiting.items():
            out[i] = await f
        return out  # type: ignore[return-value]

    async def _request(self, prompt: str, n: int, temperature: float, max_tokens: int,
                       index: int = 0, top: int = 0) -> list[dict] | Exception:
        import openai

        c = self.config
        params, extra_body = self._params(n, temperature, max_tokens, index, top)
        params["extra_body"] = extra_body or None
        last: Exception = RunError("no attempt made")
        for attempt in range(c.max_attempts):
            if attempt:
                self._usage.retries += 1
                await asyncio.sleep(self._delay(attempt, last))
            try:
                async with self._gate:
                    self._usage.requests += 1
                    if c.endpoint == "chat":
                        r = await self._client.chat.completions.create(
                            messages=[{"role": "user", "content": prompt}], **params)
                        texts = [ch.message.content for ch in r.choices]
                    else:
                        r = await self._client.completions.create(prompt=prompt, **params)
                        texts = [ch.text for ch in r.choices]
                if not texts or any(not isinstance(t, str) for t in texts):
                    raise ValueError("response has no completion text")
                records = [{"text": t} for t in texts]
                if top:
                    for record, choice in zip(records, r.choices):
                        record.update(self._signals(choice, top))
                if r.usage is not None:
                    self._usage.input_tokens += r.usage.prompt_tokens or 0
                    self._usage.output_tokens += r.usage.completion_tokens or 0
                return records
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError,
                    openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                raise Fatal(f"{type(exc).__name__} from {c.base_url} (model {c.model}): {_message(exc)}") from None
            except (openai.APIError, ValueError, KeyError, TypeError) as exc:
                last = exc  # 429, 5xx, timeouts, dropped connections, malformed bodies: retry
        return RunError(f"gave up after {c.max_attempts} attempts: {type(last).__name__}: {_message(last)}")

    def _params(self, n: int, temperature: float, max_tokens: int, index: int, top: int) -> tuple[dict, dict]:
        c = self.config
        extra_body = dict(c.extra_body)
        params: dict[str, Any] = {"model": c.model, "n": n, "temperature": temperature, "max_tokens": max_tokens}
        if top:  # the top-k of every generated token; vLLM then names tokens by id ("token_id:42")
            extra_body["return_tokens_as_token_ids"] = True
            params.update({"logprobs": True, "top_logprobs": top} if c.endpoint == "chat" else {"logprobs": top})
        if c.stop:
            params["stop"] = list(c.stop)
        if c.seed is not None:
            params["seed"] = c.seed + index
        return params, extra_body

    def _signals(self, choice: Any, k: int) -> dict:
        """The choice's tokens and top-k log-probabilities as ids (EOS appended when the model stopped on it)."""
        c = self.config
        steps: list[tuple[str, list[tuple[str, float]]]] = []
        logprobs = getattr(choice, "logprobs", None)
        if c.endpoint == "chat" and logprobs is not None and logprobs.content:
            steps = [(t.token, [(x.token, x.logprob) for x in (t.top_logprobs or [])]) for t in logprobs.content]
        elif c.endpoint != "chat" and logprobs is not None and logprobs.tokens and logprobs.top_logprobs:
            steps = [(token, sorted((top or {}).items(), key=lambda kv: -kv[1]))
                     for token, top in zip(logprobs.tokens, logprobs.top_logprobs)]
        if not steps or not all(top for _, top in steps):
            raise Fatal(f"teacher.top_logprobs: {c.base_url} (model {c.model}) returned no top log-probabilities; "
                        f"the server must support logprobs (vLLM, llama.cpp and OpenAI do), or set "
                        f"top_logprobs = 0")
        tok = self._tokenizer()
        ids = [self._token_id(t, tok) for t, _ in steps]
        top_ids = [[self._token_id(t, tok) for t, _ in top[:k]] for _, top in steps]
        top_lps = [[round(float(lp), 4) for _, lp in top[:k]] for _, top in steps]
        eos = tok.eos_token_id
        if getattr(choice, "finish_reason", None) == "stop" and not c.stop and eos is not None and \
                (not ids or ids[-1] != eos):  # the server drops the EOS it stopped on; the student learns it
            ids, top_ids, top_lps = ids + [eos], top_ids + [[eos]], top_lps + [[0.0]]
        return {"target_ids": ids, "topk_ids": top_ids, "topk_logprobs": top_lps}

    def _tokenizer(self) -> Any:
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.config.tokenizer)
        return self._tok

    @staticmethod
    def _token_id(token: str, tok: Any) -> int:
        if token.startswith("token_id:"):
            return int(token[len("token_id:"):])
        found = tok.convert_tokens_to_ids(token)
        if found is None or found == tok.unk_token_id and token != tok.unk_token:
            raise Fatal(f"teacher.tokenizer: the server's token {token!r} is not in {tok.name_or_path}'s "
                        "vocabulary; give the served model's own tokenizer")
        return int(found)

    def _delay(self, attempt: int, last: Exception) -> float:
        c = self.config
        response = getattr(last, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return min(float(retry_after), c.backoff_max)
            except ValueError:
                pass
        return min(c.backoff_max, c.backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message") if isinstance(
            body.get("error"), dict) or "message" in body else None
        if message:
            return str(message)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@hookimpl
def register_teachers(register):
    register("openai", OpenAITeacher)
