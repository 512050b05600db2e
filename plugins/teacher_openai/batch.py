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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cache import content_key
from harness.io import atomic_write_json

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
        self.url = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"

    def run(self, pending: list[Pending]) -> tuple[dict[str, dict], str]:
        """Submit (or pick up) the batch for ``pending``; return ``{custom_id: response body}`` for the lines that
        succeeded, and how the batch ended."""
        if not pending:
            return {}, "empty"
        name = content_key(url=self.url, ids=sorted(p.custom_id for p in pending))[:24]
        state_path = self.folder / f"{name}.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        if not state.get("batch_id"):
            state = self._submit(pending, state, state_path)
        self.ids.append(state["batch_id"])
        batch = self._wait(state["batch_id"], len(pending))
        bodies = self._results(batch) if batch.output_file_id else {}
        state_path.unlink(missing_ok=True)  # the caller merges the results into the cache next
        return bodies, batch.status

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
        self.note(f"submitted batch {batch.id} ({len(pending)} requests); state in {state_path}")
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
        out = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                response = record.get("response") or {}
                if response.get("status_code") == 200 and not record.get("error"):
                    out[record["custom_id"]] = response["body"]
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a damaged line: that request is asked again synchronously
        return out
