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

Modules: ``config`` (the recipe table), ``estimate`` (the bill before the run), ``batch`` (the Batch API); this
one holds the teacher and its direct requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import (
    BadInputError,
    Example,
    Generation,
    Teacher,
    TeacherEstimate,
    TeacherUsage,
    alignment,
    hookimpl,
    prompts,
    secrets,
    serve,
)
from harness.cache import JsonlCache, content_key, default_cache_dir
from harness.errors import RunError
from harness.generation import signal_problem
from harness.models import tokenizer_vocabulary

from .batch import fill_cache
from .config import Config, Fatal
from .estimate import estimate
from .pool import Pool


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
        self._stack: contextlib.ExitStack | None = None
        self._server: str | None = None
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
                progress = fill_cache(self, examples, trigger, cache, progress, folder / "batches")
            return asyncio.run(self._generate_all(examples, trigger, cache, progress, self._base_url(folder)))

    def _base_url(self, folder: Path) -> str:
        """The recipe's server, or the one the teacher starts (``serve``): started by the first call that needs
        it and kept for the next chunks, stopped by ``close``."""
        c = self.config
        if not c.serve:
            return c.base_url
        if self._server is None:
            log = folder / "serve" / (content_key(model=c.model)[:16] + ".log")
            self._stack = contextlib.ExitStack()
            self._server = self._stack.enter_context(serve.managed_server(c.serve, c.model, log,
                                                                          timeout=c.serve_timeout))
        return self._server

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self._server = None, None

    def estimate(self, examples: Sequence[Example], task) -> TeacherEstimate:
        """What ``generate`` would send and cost, minus the cache (``estimate.estimate``)."""
        return estimate(self, examples, task)

    def _cache_path(self) -> Path:
        c = self.config
        folder = Path(c.cache_dir or default_cache_dir())
        return folder / "teacher" / (content_key(base_url=self._endpoint, model=c.model)[:16] + ".jsonl")

    def signals(self) -> tuple[str, ...]:
        """With ``top_logprobs``: ``topk_text`` (the tokens as text), and ``topk`` (as ids) when ``tokenizer``
        names the served model's tokenizer; ``scores`` when the teacher serves its model itself (vLLM's prompt
        log-probabilities score new text during training)."""
        c = self.config
        topk = (("topk", "topk_text") if c.tokenizer else ("topk_text",)) if c.top_logprobs else ()
        return topk + (("scores",) if c.serve else ())

    def scorer(self) -> "serve.ServedScorer | None":
        c = self.config
        if not c.serve:
            return None
        log = Path(c.cache_dir or default_cache_dir()) / "serve" / (content_key(model=c.model)[:16] + "-score.log")
        return serve.ServedScorer(c.serve, c.model, log, timeout=c.serve_timeout)

    def vocabulary(self) -> str | None:
        return tokenizer_vocabulary(self.config.tokenizer) if self.config.tokenizer else None

    def usage(self) -> TeacherUsage:
        u, c = self._usage, self.config
        batch_in, batch_out = self._batch_tokens
        u.cost = round(((u.input_tokens - batch_in + c.batch_price_factor * batch_in) * c.price_per_million_input
                        + (u.output_tokens - batch_out + c.batch_price_factor * batch_out)
                        * c.price_per_million_output) / 1e6, 6)
        return u

    # The flow per example ---------------------------------------------------------------------------------

    async def _generate_all(self, examples, trigger, cache, progress, base_url: str) -> list[list[Generation]]:
        from openai import AsyncOpenAI

        c = self.config
        key = os.environ.get(c.api_key_env, "") if c.api_key_env and not c.serve else "none"
        if c.api_key_env and not c.serve and not key:
            raise BadInputError(f"teacher.api_key_env: the environment variable {c.api_key_env} is not set "
                                "(set it, or api_key_env = \"\" for a server that needs no key)")
        servers = [(base_url, c.concurrency)] + [(e["base_url"], e.get("concurrency", c.concurrency))
                                                 for e in c.endpoints]
        self._pool = Pool(servers, lambda url: AsyncOpenAI(base_url=url, api_key=key, max_retries=0,
                                                           timeout=c.timeout))
        self._cache = cache
        self._inflight: dict[str, asyncio.Future] = {}
        self._unusable: list[str] = []
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._example(e, trigger, progress)) for e in examples]
        except* Fatal as fatal:
            raise BadInputError(f"teacher: {fatal.exceptions[0]}") from None
        finally:
            await self._pool.close()
            if c.endpoints:
                self._usage.endpoints = self._pool.summary()
        if self._unusable:  # every other answer is in the cache: a re-run asks for nothing already paid
            bad = self._unusable
            raise BadInputError(
                f"teacher.top_logprobs: {c.base_url} (model {c.model}) returned unusable top-k signals for "
                f"{len(bad)} requests: " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else "") +
                f". Their responses are kept in the teacher cache {cache.path} under those entries, so a re-run "
                f"pays for nothing twice and stops here again: fix the server, then delete those entries' lines "
                f"from the cache to ask them again (or set teacher.top_logprobs = 0 to train on text only)")
        return [t.result() for t in tasks]

    async def _example(self, example: Example, trigger: str, progress) -> list[Generation]:
        c = self.config
        prompt = prompts.first_prompt(c.prompt, example.question, self._exemplars)
        first = await self._samples(prompt, c.samples, c.temperature, c.max_tokens, c.top_logprobs)
        for i, record in enumerate(first):
            if isinstance(record, dict) and len(record) > 1:  # top-k signals beside the text
                problem = signal_problem({k: v for k, v in record.items() if k != "text"}, self._vocabulary_size())
                if problem:
                    key = self._key(prompt, c.temperature, c.max_tokens, i, c.top_logprobs)
                    self._unusable.append(f"question {example.id} sample {i} (cache entry {key[:16]}...): {problem}")
                    first[i] = RunError(f"unusable top-k signals: {problem}")
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
        moved = False
        for attempt in range(c.max_attempts):
            if attempt:
                self._usage.retries += 1
                if not moved:  # the retry of a request whose server was given up goes at once to another one
                    await asyncio.sleep(self._delay(attempt, last))
            server = self._pool.pick()
            try:
                async with server.gate:
                    server.inflight += 1
                    self._usage.requests += 1
                    try:
                        if c.endpoint == "chat":
                            r = await server.client.chat.completions.create(
                                messages=[{"role": "user", "content": prompt}], **params)
                            texts = [ch.message.content for ch in r.choices]
                        else:
                            r = await server.client.completions.create(prompt=prompt, **params)
                            texts = [ch.text for ch in r.choices]
                    finally:
                        server.inflight -= 1
                if not texts or any(not isinstance(t, str) for t in texts):
                    raise ValueError("response has no completion text")
                records = [{"text": t} for t in texts]
                if top:
                    for record, choice in zip(records, r.choices):
                        record.update(self._signals(choice, top))
                if r.usage is not None:
                    self._usage.input_tokens += r.usage.prompt_tokens or 0
                    self._usage.output_tokens += r.usage.completion_tokens or 0
                self._pool.answered(server)
                return records
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError,
                    openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                raise Fatal(f"{type(exc).__name__} from {server.url} (model {c.model}): {_message(exc)}") from None
            except (openai.APIError, ValueError, KeyError, TypeError) as exc:
                last = exc  # 429, 5xx, timeouts, dropped connections, malformed bodies: retry
                moved = self._pool.failed(server) or server.dead
        return RunError(f"gave up after {c.max_attempts} attempts: {type(last).__name__}: {_message(last)}")

    def _params(self, n: int, temperature: float, max_tokens: int, index: int, top: int) -> tuple[dict, dict]:
        c = self.config
        extra_body = dict(c.extra_body)
        params: dict[str, Any] = {"model": c.model, "n": n, "temperature": temperature, "max_tokens": max_tokens}
        if top:  # the top-k of every generated token; with a tokenizer, vLLM is asked to name tokens by id
            if c.tokenizer:
                extra_body["return_tokens_as_token_ids"] = True
            params.update({"logprobs": True, "top_logprobs": top} if c.endpoint == "chat" else {"logprobs": top})
        if c.stop:
            params["stop"] = list(c.stop)
        if c.seed is not None:
            params["seed"] = c.seed + index
        return params, extra_body

    def _signals(self, choice: Any, k: int) -> dict:
        """The choice's tokens and top-k log-probabilities: as text always (``target_text``, ``topk_text``, for
        students with another tokenizer: ``harness.alignment``), and as ids with ``tokenizer``. The EOS is
        appended when the model stopped on it (the server drops it; the student learns it)."""
        c = self.config
        steps: list[tuple[Token, list[tuple[Token, float]]]] = []
        logprobs = getattr(choice, "logprobs", None)
        if c.endpoint == "chat" and logprobs is not None and logprobs.content:
            steps = [((t.token, t.bytes), [((x.token, x.bytes), x.logprob) for x in (t.top_logprobs or [])])
                     for t in logprobs.content]
        elif c.endpoint != "chat" and logprobs is not None and logprobs.tokens and logprobs.top_logprobs:
            steps = [((token, None), sorted((((t, None), lp) for t, lp in (top or {}).items()), key=lambda kv: -kv[1]))
                     for token, top in zip(logprobs.tokens, logprobs.top_logprobs)]
        if not steps or not all(top for _, top in steps):
            raise Fatal(f"teacher.top_logprobs: {c.base_url} (model {c.model}) returned no top log-probabilities; "
                        f"the server must support logprobs (vLLM, llama.cpp and OpenAI do), or set "
                        f"top_logprobs = 0")
        top_lps = [[round(float(lp), 4) for _, lp in top[:k]] for _, top in steps]
        stopped = getattr(choice, "finish_reason", None) == "stop" and not c.stop
        tok = self._tokenizer() if c.tokenizer else None
        if tok is not None:
            ids = [self._token_id(t, tok) for (t, _), _ in steps]
            top_ids = [[self._token_id(t, tok) for (t, _), _ in top[:k]] for _, top in steps]
            texts = alignment.teacher_text(tok, ids)
            alternatives = alignment.alternative_texts(tok, top_ids)
        else:
            texts = _stream_text([t for t, _ in steps])
            alternatives = [[_token_text(t) for t, _ in top[:k]] for _, top in steps]
        eos = tok.eos_token_id if tok is not None else None
        if stopped and (tok is None or eos is not None and (not ids or ids[-1] != eos)):
            texts, alternatives, top_lps = texts + [alignment.END], alternatives + [[alignment.END]], top_lps + [[0.0]]
            if tok is not None:
                ids, top_ids = ids + [eos], top_ids + [[eos]]
        out = {"target_text": texts, "topk_text": alternatives, "topk_logprobs": top_lps}
        if tok is not None:
            out.update({"target_ids": ids, "topk_ids": top_ids})
        return out

    def _vocabulary_size(self) -> int | None:
        return len(self._tokenizer()) if self.config.tokenizer else None

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


Token = tuple[str, "list[int] | None"]
"""A token as the server names it: its string and, where the server gives them (chat), its UTF-8 bytes."""


def _token_bytes(token: Token) -> bytes | None:
    text, raw = token
    if raw is not None:
        return bytes(raw)
    if text.startswith("bytes:"):  # the completions endpoint's name for a piece of a UTF-8 character
        try:
            return text[len("bytes:"):].encode("latin-1").decode("unicode_escape").encode("latin-1")
        except (UnicodeError, ValueError):
            return None
    return text.encode("utf-8")


def _stream_text(tokens: list[Token]) -> list[str]:
    """The generated tokens' texts, concatenating to the completion: a token that ends inside a UTF-8 character
    adds nothing, the one that completes it adds the character."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return [decoder.decode(_token_bytes(t) or b"") for t in tokens]


def _token_text(token: Token) -> str:
    """An alternative's text; ``""`` (not mappable) for a piece of a UTF-8 character."""
    raw = _token_bytes(token)
    try:
        return raw.decode("utf-8") if raw is not None else ""
    except UnicodeDecodeError:
        return ""


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
