"""The OpenAI Batch API for the openai teacher (``batch = true``): the requests a phase still needs are written as
one JSONL file, uploaded and submitted as one batch, polled until it ends, and its results merged into the same
cache the synchronous path uses.

Nothing is submitted twice. A phase's requests are named by their cache keys, so a re-run after a kill computes
the same set and finds its state file (``<cache_dir>/batches/<key>.json``), written with ``fsync`` before and
after each step that costs: the uploaded file's id before the batch is created, the batch's id as soon as it
exists. A run killed between creating the batch and saving its id finds the batch again by its input file in the
server's batch list. A batch that failed, expired or was cancelled leaves its missing requests to the
synchronous path (which asks only what the cache lacks).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import BadInputError, RunError, prompts
from harness.cache import content_key
from harness.io import atomic_write_json

from .config import Fatal

TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class Pending:
    """One batch line: its request body and the cache keys of the completions it returns, in choice order."""

    body: dict[str, Any]
    keys: tuple[str, ...]

    @property
    def custom_id(self) -> str:
        return self.keys[0]


class BatchPhase:
    def __init__(self, client: Any, endpoint: str, folder: Path, poll_seconds: float,
                 tick: Callable[[int, int], None], note: Callable[[str], None] = lambda _: None):
        self.client, self.endpoint, self.folder, self.poll = client, endpoint, folder, poll_seconds
        self.tick, self.note = tick, note
        self.ids: list[str] = []
        """The batches this phase waited on (new or picked up), in order."""
        self.duplicated = 0
        """Requests whose output held two different answers (neither kept)."""
        self.url = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"

    def run(self, pending: list[Pending], merge: Callable[[dict[str, dict], str], None]) -> None:
        """Submit (or pick up) the batch for ``pending``, wait for it, and hand ``merge`` ``{custom_id: response
        body}`` for the lines that succeeded and how the batch ended. The state file goes only once ``merge``
        returned (the answers are in the cache): a kill before that picks the same batch up again, never a new
        one. A server that answers the batch calls with an error is a message, not a traceback."""
        import openai

        if not pending:
            merge({}, "empty")
            return
        name = content_key(url=self.url, ids=sorted(p.custom_id for p in pending))[:24]
        state_path = self.folder / f"{name}.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        try:
            if not state.get("batch_id"):
                state = self._submit(pending, state, state_path)
            self.ids.append(state["batch_id"])
            batch = self._wait(state["batch_id"], len(pending))
            bodies = self._results(batch) if batch.output_file_id else {}
        except openai.APIStatusError as exc:
            raise _batch_error(exc, self.url, state_path) from None
        except openai.APIConnectionError as exc:
            raise RunError(f"teacher.batch: the Batch API did not answer ({type(exc).__name__}); what it finished "
                           f"is kept ({state_path}): run again to pick the batch up") from None
        merge(bodies, batch.status)
        state_path.unlink(missing_ok=True)

    def _submit(self, pending: list[Pending], state: dict, state_path: Path) -> dict:
        if state.get("input_file_id"):  # uploaded, perhaps submitted, before a kill: never submit it twice
            found = self._batch_for(state["input_file_id"])
            if found is not None:
                state["batch_id"] = found
                atomic_write_json(state_path, state)
                return state
        if not state.get("input_file_id"):
            lines = "".join(json.dumps({"custom_id": p.custom_id, "method": "POST", "url": self.url, "body": p.body},
                                       ensure_ascii=False) + "\n" for p in pending)
            uploaded = self.client.files.create(file=("requests.jsonl", lines.encode()), purpose="batch")
            state = {"input_file_id": uploaded.id, "requests": len(pending), "created": time.time()}
            atomic_write_json(state_path, state)
        batch = self.client.batches.create(input_file_id=state["input_file_id"], endpoint=self.url,
                                           completion_window="24h")
        state["batch_id"] = batch.id
        atomic_write_json(state_path, state)
        return state

    def _batch_for(self, input_file_id: str) -> str | None:
        for batch in self.client.batches.list(limit=100):
            if batch.input_file_id == input_file_id:
                return batch.id
        return None

    def _wait(self, batch_id: str, total: int) -> Any:
        while True:
            batch = self.client.batches.retrieve(batch_id)
            counts = batch.request_counts
            self.tick((counts.completed + counts.failed) if counts else 0, total)
            if batch.status in TERMINAL:
                return batch
            time.sleep(self.poll)

    def _results(self, batch: Any) -> dict[str, dict]:
        text = self.client.files.content(batch.output_file_id).text
        out: dict[str, dict] = {}
        doubled: set[str] = set()
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                response = record.get("response") or {}
                if response.get("status_code") == 200 and not record.get("error"):
                    custom_id, body = record["custom_id"], response["body"]
                    if custom_id in out and out[custom_id] != body:
                        doubled.add(custom_id)  # two different answers to one request: trust neither
                    out[custom_id] = body
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a damaged line: that request is asked again synchronously
        if doubled:
            self.note(f"batch {batch.id}: {len(doubled)} requests have two different answers in its output; "
                      f"neither is kept, they are asked again directly")
            self.duplicated += len(doubled)
        return {k: v for k, v in out.items() if k not in doubled}


def _batch_error(exc: Any, url: str, state_path: Path) -> Exception:
    """A message for a batch call the server refused, by its status."""
    status = getattr(exc, "status_code", 0)
    where = f"the Batch API ({getattr(exc.request, 'url', url)})" if getattr(exc, "request", None) else "the Batch API"
    if status in (401, 403):
        return BadInputError(f"teacher.api_key_env: {where} refused the key (HTTP {status}); check the key the "
                             f"variable holds")
    if status == 404:
        return BadInputError(f"teacher.batch: {where} answered 404: this server has no Batch API (or forgot the "
                             f"batch); set teacher.batch = false to ask directly")
    if status == 413:
        return BadInputError(f"teacher.batch: {where} answered 413: the batch file is too large for it; set "
                             f"teacher.batch = false, or teach fewer questions per run")
    return RunError(f"teacher.batch: {where} answered HTTP {status}; what it finished is kept ({state_path}): run "
                    f"again to pick the batch up")


# The teacher's side --------------------------------------------------------------------------------------------

def fill_cache(teacher: Any, examples: Any, trigger: str, cache: Any, progress: Any, folder: Path):
    """Fill the cache through the Batch API: the rationales, then the answer requests they lead to. Return the
    progress callback for the rest of the stage (the batches took the bar to its end; what follows only
    finishes it)."""
    from openai import OpenAI

    c = teacher.config
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
    exemplars = teacher._exemplars
    seen: set[str] = set()
    first = []
    for e in examples:
        prompt = prompts.first_prompt(c.prompt, e.question, exemplars)
        keys = [teacher._key(prompt, c.temperature, c.max_tokens, i, c.top_logprobs) for i in range(c.samples)]
        missing = [i for i, k in enumerate(keys) if k not in cache and k not in seen]
        seen.update(keys[i] for i in missing)
        if len(missing) > 1 and c.use_n:
            first.append(Pending(_body(teacher, prompt, len(missing), c.temperature, c.max_tokens, 0,
                                            c.top_logprobs), tuple(keys[i] for i in missing)))
        else:
            first += [Pending(_body(teacher, prompt, 1, c.temperature, c.max_tokens, i, c.top_logprobs), (keys[i],))
                      for i in missing]
    phase.note = teacher._usage.notes.append
    phase.run(first, lambda bodies, status: _merge(teacher, first, bodies, status, cache, c.top_logprobs))
    if two_phases:
        phase.tick = lambda done, of: advance_to(share + (total - share) * done // max(of, 1))
        second = []
        for e in examples:
            prompt = prompts.first_prompt(c.prompt, e.question, exemplars)
            for i in range(c.samples):
                hit = cache.get(teacher._key(prompt, c.temperature, c.max_tokens, i, c.top_logprobs))
                if hit is None or prompts.parse_first(c.prompt, hit["text"])[1] is not None:
                    continue
                stage2 = prompts.zero_shot_stage2(e.question, hit["text"], trigger)
                k = teacher._key(stage2, 0.0, c.answer_max_tokens, 0)
                if k not in cache and k not in seen:
                    seen.add(k)
                    second.append(Pending(_body(teacher, stage2, 1, 0.0, c.answer_max_tokens, 0, 0), (k,)))
        phase.run(second, lambda bodies, status: _merge(teacher, second, bodies, status, cache, 0))
    teacher._usage.batches += phase.ids
    advance_to(total)
    return lambda k: advance_to(shown[0] + k)

def _body(teacher: Any, prompt: str, n: int, temperature: float, max_tokens: int, index: int, top: int) -> dict:
    """A batch line's request body: what ``_request`` sends, with ``extra_body`` merged in."""
    params, extra_body = teacher._params(n, temperature, max_tokens, index, top)
    text = {"messages": [{"role": "user", "content": prompt}]} if teacher.config.endpoint == "chat" else \
        {"prompt": prompt}
    return {**params, **extra_body, **text}

def _merge(teacher: Any, pending: list, bodies: dict[str, dict], status: str, cache: Any, top: int) -> None:
    from openai.types import Completion
    from openai.types.chat import ChatCompletion

    chat = teacher.config.endpoint == "chat"
    rejected = 0
    for p in pending:
        body = bodies.get(p.custom_id)
        if body is None:
            continue
        usage = body.get("usage") if isinstance(body, dict) else None
        if isinstance(usage, dict):  # paid whether or not the answer is usable: it is on the bill
            spent_in, spent_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            teacher._usage.input_tokens += spent_in
            teacher._usage.output_tokens += spent_out
            teacher._batch_tokens[0] += spent_in
            teacher._batch_tokens[1] += spent_out
        try:
            r = (ChatCompletion if chat else Completion).model_validate(body)
            texts = [ch.message.content for ch in r.choices] if chat else [ch.text for ch in r.choices]
            records = [{"text": t} for t in texts if isinstance(t, str)]
            if top:
                for record, choice in zip(records, r.choices):
                    record.update(teacher._signals(choice, top))
        except (ValueError, TypeError, Fatal):
            rejected += 1
            continue  # asked again directly
        for k, record in zip(p.keys, records):
            cache.put(k, record)
        teacher._usage.batched += len(records)
    if hasattr(cache, "sync"):
        cache.sync()  # on disk before the batch's state file goes
    if rejected:
        teacher._usage.notes.append(f"{rejected} batch answers were not usable (no text, or no log-probabilities where "
                     f"top_logprobs asks for them); they are on the bill and asked again directly")
    if pending:
        teacher._usage.requests += len(pending)
