"""A content-keyed, append-only JSON Lines cache for expensive calls (teacher completions).

Each finished call is appended as one line and flushed at once, so a process killed at any moment (even with
``kill -9``) loses only the calls in flight. On opening, a torn last line (a write cut short) is detected,
reported and cut off, so later appends start on a clean line; an unreadable line elsewhere is skipped.
Keys hash everything that determines the result (endpoint, model, prompt, parameters, sample index) and never
the credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_ENV = "HARNESS_CACHE_DIR"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "harness")


def content_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class JsonlCache:
    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.dropped = 0
        """Lines that could not be read (a torn last write, or damage)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        offset = 0
        for raw in data.splitlines(keepends=True):
            end = offset + len(raw)
            complete = raw.endswith(b"\n")
            try:
                record = json.loads(raw)
                key = record["key"]
            except (ValueError, KeyError, TypeError):
                self.dropped += 1
            else:
                if complete:
                    self.entries[key] = record["value"]
                    good_end = end
                else:
                    self.dropped += 1  # valid JSON but no newline: the write may not have finished
            if complete and good_end < end:
                good_end = end  # a damaged but complete line: keep the bytes, skip the record
            offset = end
        if good_end < len(data):
            with self.path.open("r+b") as f:  # cut a torn tail so the next append starts a clean line
                f.truncate(good_end)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: str, value: dict[str, Any]) -> None:
        if key in self.entries:
            return
        self.entries[key] = value
        self._file.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
        self._file.flush()

    def sync(self) -> None:
        """Everything put so far on disk (fsync), before anything that relies on it being there survives a crash
        (a batch's state file is removed only after its answers are synced)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
