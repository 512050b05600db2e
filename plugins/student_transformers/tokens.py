"""Training pairs as token ids on disk: encoded once per content key (the pairs, the tokenizer, the encoding
settings), in parallel processes, and read memory-mapped while training, so a million pairs cost the trainer a few
arrays of offsets rather than millions of Python lists.

A store is a folder: for each field ``encode`` makes (``input_ids``, ``labels``, ``weight`` and every signal:
``topk_ids``, ``topk_logprobs``, a strategy's own), ``<field>.bin`` (the values of every row, one after another;
int32 for token ids, float32 for the rest), ``<field>.off`` (int64 row offsets, n + 1 of them), and
``lengths.npy`` (the tokens each row puts through the model, for the length-grouped sampler). ``store.json``
(written last: a store without it is unfinished and is made again) says each field's layout: ``row`` (one
number per row), ``token`` (one per position) or ``nested`` (a list per position, as wide as the row's values
divided by its positions).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from harness import alignment
from harness.models import tokenizer_vocabulary
from harness.records import RecordTable

from .encoding import encode, useful_tokens

CHUNK = 4096
"""Pairs encoded per task sent to a worker process."""


def content_key(train: Sequence[Any], tokenizer: Any, max_length: int, encoder_decoder: bool, chat: Any) -> str | None:
    """What the token ids depend on; None when the pairs have no stable identity (not read from a file)."""
    if not isinstance(train, RecordTable):
        return None
    vocabulary = tokenizer_vocabulary(tokenizer)
    parts = [train.digest(), vocabulary, max_length, encoder_decoder, repr(chat), type(tokenizer).__name__,
             tokenizer.eos_token_id, tokenizer.pad_token_id, "tokens-2", alignment.VERSION]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


class TokenStore(Sequence[dict]):
    """The rows of a finished store: ``store[i]`` is the dict ``encode`` made for pair ``i``; ``lengths`` is a
    memory-mapped array."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / "store.json").read_text())
        self.rows, self.layout = meta["rows"], meta["layout"]
        self.fields = list(self.layout)
        self.lengths = np.load(self.folder / "lengths.npy", mmap_mode="r")
        self._values = {f: np.memmap(self.folder / f"{f}.bin", mode="r", dtype=_dtype(f)) if self._size(f) else
                        np.zeros(0, dtype=_dtype(f)) for f in self.fields}
        self._offsets = {f: np.load(self.folder / f"{f}.off.npy", mmap_mode="r") for f in self.fields}

    def _size(self, field: str) -> int:
        return (self.folder / f"{field}.bin").stat().st_size

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i):  # type: ignore[override]
        i = int(i)
        if not 0 <= i < self.rows:
            raise IndexError(i)
        row: dict[str, Any] = {}
        for f in self.fields:  # input_ids first: nested fields need the row's positions
            a, b = int(self._offsets[f][i]), int(self._offsets[f][i + 1])
            if a == b and f not in ("input_ids", "labels"):
                continue  # a pair without this signal
            values = self._values[f][a:b]
            layout = self.layout[f]
            if layout == "row":
                row[f] = float(values[0])
            elif layout == "nested":
                row[f] = values.reshape(len(row["input_ids"]), -1).tolist()
            else:
                row[f] = values.tolist()
        return row


def _dtype(field: str) -> Any:
    return np.int32 if field in ("input_ids", "labels") or field.endswith("_ids") else np.float32


def _layout(value: Any) -> str:
    if isinstance(value, (int, float)):
        return "row"
    return "nested" if value and isinstance(value[0], (list, tuple)) else "token"


def _encode_chunk(job: tuple[str, int, int, Any, int, bool, Any]) -> list[dict]:
    path, start, stop, tokenizer, max_length, encoder_decoder, chat = job
    from harness.records import TRAINING

    table = RecordTable(Path(path), TRAINING)
    return encode(tokenizer, table.rows(start, stop), max_length, encoder_decoder, chat)


def build_store(train: Sequence[Any], tokenizer: Any, max_length: int, encoder_decoder: bool, chat: Any,
                folder: Path, processes: int = 1) -> TokenStore:
    """Encode every pair into ``folder`` chunk by chunk (``processes`` > 1: that many worker processes, each
    reading its chunk from the pairs' file), writing as it goes."""
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.partial")  # several training processes may race here
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weighted = any(w != 1.0 for batch in train.column("weight") for w in batch) if isinstance(train, RecordTable) \
        else any(t.weight != 1.0 for t in train)
    files: dict[str, Any] = {}
    layout: dict[str, str] = {"input_ids": "token", "labels": "token"}
    counts: dict[str, list[np.ndarray]] = {}  # per field, per chunk: how many values each row has
    lengths: list[np.ndarray] = []
    done = 0  # rows written before the current chunk

    def add(rows: list[dict]) -> None:
        """Append a chunk's rows; a field a row lacks (top-k signals on pairs without them) is empty there."""
        nonlocal done
        flats: dict[str, list] = {f: [] for f in files}
        sizes: dict[str, list[int]] = {f: [0] * len(rows) for f in files}
        chunk_lengths = []
        for r, row in enumerate(rows):
            if weighted:
                row.setdefault("weight", 1.0)
            else:
                row.pop("weight", None)
            chunk_lengths.append(useful_tokens(row))
            for f, value in row.items():
                if f not in files:  # a field first seen now: the rows before have none of it
                    files[f] = (tmp / f"{f}.bin").open("wb")
                    counts[f] = [np.zeros(done, dtype=np.int32)]
                    flats[f], sizes[f] = [], [0] * len(rows)
                    layout.setdefault(f, _layout(value))
                if layout[f] == "row":
                    flat = [value]
                elif layout[f] == "nested":
                    flat = [x for position in value for x in position]
                else:
                    flat = value
                flats[f].extend(flat)
                sizes[f][r] = len(flat)
        for f, flat in flats.items():
            files[f].write(np.asarray(flat, dtype=_dtype(f)).tobytes())
            counts[f].append(np.asarray(sizes[f], dtype=np.int32))
        lengths.append(np.asarray(chunk_lengths, dtype=np.int32))
        done += len(rows)

    spans = [(a, min(a + CHUNK, len(train))) for a in range(0, len(train), CHUNK)]
    if processes > 1 and isinstance(train, RecordTable) and len(spans) > 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the workers are the parallelism
        jobs = [(str(train.path), a, b, tokenizer, max_length, encoder_decoder, chat) for a, b in spans]
        try:
            with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
                for rows in pool.map(_encode_chunk, jobs):
                    add(rows)
        except BrokenProcessPool:  # a worker could not start (a calling script without a __main__ guard...)
            for handle in files.values():
                handle.close()
            return build_store(train, tokenizer, max_length, encoder_decoder, chat, folder, processes=1)
    else:
        for a, b in spans:
            rows = train.rows(a, b) if isinstance(train, RecordTable) else train[a:b]
            add(encode(tokenizer, rows, max_length, encoder_decoder, chat))
    for f, handle in files.items():
        handle.close()
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts[f]), dtype=np.int64)])
        np.save(tmp / f"{f}.off.npy", offsets.astype(np.int64))
    np.save(tmp / "lengths.npy", np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32))
    ordered = {f: layout[f] for f in ("input_ids", "labels", *files) if f in files}  # input_ids first
    (tmp / "store.json").write_text(json.dumps({"rows": done, "layout": ordered}))
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished the same store first: the same ids
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenStore(folder)


def encoded(train: Sequence[Any], tokenizer: Any, max_length: int, encoder_decoder: bool, chat: Any,
            cache_dir: Path | None, processes: int = 1) -> Sequence[dict]:
    """The pairs as token-id rows: from the cache when this content key was encoded before, else encoded into it
    (with no cache folder, or pairs not read from a file: encoded in memory, as before)."""
    key = content_key(train, tokenizer, max_length, encoder_decoder, chat) if cache_dir is not None else None
    if key is None:
        return encode(tokenizer, train, max_length, encoder_decoder, chat)
    folder = cache_dir / "tokens" / key
    if (folder / "store.json").is_file():
        return TokenStore(folder)
    return build_store(train, tokenizer, max_length, encoder_decoder, chat, folder, processes)
