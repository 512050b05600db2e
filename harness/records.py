"""Stage records on disk: Arrow IPC files written in bounded batches and read back batch by batch, so that no stage
holds a whole dataset in memory, whatever its size.

Why Arrow IPC files (not Parquet, not JSON Lines): a record batch is read straight into Arrow's columnar memory
with no decoding step (Parquet decompresses and decodes every page), and any batch can be reached without reading
the ones before it (the file format's footer indexes them), so a sequence backed by a file supports ``len`` and
random access. The text-heavy kinds (generations, training pairs: rationales and top-k signals) are written with
Arrow's zstd buffer compression, about 3x smaller; a batch is decompressed when it is read. Any Arrow reader,
``datasets`` included, opens these files (docs/data.md). Parquet
is what ``harness export`` writes for sharing: compressed, and read by every tool.

Four kinds of record travel between stages, each with its schema: ``EXAMPLES`` (a task's split), ``GENERATIONS``
(what the teacher wrote), ``GRADES`` (the filter's verdicts, row for row beside the generations: no copy of the
text) and ``TRAINING`` (a strategy's training pairs). ``meta`` and ``signals`` are free-form dictionaries, stored
as JSON text.

    with RecordWriter(path, TRAINING) as out:
        out.write(pairs)                  # any iterable of TrainingExample; buffered, flushed every batch
    table = RecordTable(path, TRAINING)   # a Sequence[TrainingExample]: len, [i], iteration
    for chunk in table.chunks(10_000):    # lists of records, one batch in memory at a time
        ...

One module, above the usual size, because it is one public import path (``harness.records``) whose parts are one
format: the kinds' column conversions, the writer and the reader are written against each other (a batch's
layout, the row counting, the held-off collector), and splitting them would split that format across files.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa

from harness.types import Example, Generation, SubStep, TrainingExample

T = TypeVar("T")

BATCH_ROWS = 8192
"""Rows per record batch: what one batch of a stage holds in memory at a time (a few MB of text)."""

_STEPS = pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string())]))
_TURNS = pa.list_(pa.struct([("context", pa.string()), ("target", pa.string())]))


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""One encoder for every value (``json.dumps`` with options builds a new one per call)."""


def _json(value: Any) -> str:
    return _ENCODE(value) if value else ""


def _unjson_all(texts: list[str | None]) -> list[dict[str, Any]]:
    """A column of JSON texts (``""``: empty) decoded in one parse: several times faster than one per row."""
    full = [t for t in texts if t]
    if not full:
        return [{} for _ in texts]
    values = iter(json.loads("[" + ",".join(full) + "]"))
    return [next(values) if t else {} for t in texts]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector held off while records are made, converted or worked on a chunk at a time. Records
    are millions of small objects without cycles, and each batch of them alive at once set off collections that
    scan every live object: about a quarter of the data stages' time (measured). It is back on as soon as
    the block ends, so cycles made meanwhile (an HTTP client's, say) are still collected, a chunk later."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _maker(cls: type) -> Callable[..., Any]:
    """A constructor for a frozen dataclass that fills its fields directly (its own ``__init__`` sets each
    through ``object.__setattr__``: twice as slow, and records are built by the million). The same object."""
    names = tuple(f for f in cls.__dataclass_fields__)
    new = object.__new__

    def make(*values: Any) -> Any:
        obj = new(cls)
        obj.__dict__.update(zip(names, values))
        return obj

    return make


@dataclass(frozen=True)
class Kind(Generic[T]):
    """A kind of record: its Arrow schema and the conversions between a list of records and columns (column by
    column: an order of magnitude faster than a dictionary per row)."""

    name: str
    schema: pa.Schema
    to_columns: Callable[[list[T]], dict[str, list[Any]]]
    from_columns: Callable[[dict[str, list[Any]]], list[T]]
    compression: str | None = None
    """Arrow IPC's buffer compression for this kind's files (``zstd`` for the text-heavy ones)."""

    def batch(self, records: list[T]) -> pa.RecordBatch:
        """Records as one Arrow record batch (what a worker process hands back: it pickles as Arrow IPC)."""
        with gc_paused():
            return pa.RecordBatch.from_pydict(self.to_columns(records), schema=self.schema)

    def records(self, batch: pa.RecordBatch) -> list[T]:
        """An Arrow record batch (or a slice of one) as records."""
        with gc_paused():
            return self.from_columns({name: _pylist(batch.column(name)) for name in batch.schema.names})


def _pairs_array(rows: list[Sequence[tuple[str, str]]], type_: pa.DataType) -> pa.Array:
    """A list-of-pairs column (steps, turns) built from flat columns and offsets, no dictionary per pair."""
    offsets, firsts, seconds, n = [0], [], [], 0
    for pairs in rows:
        for a, b in pairs:
            firsts.append(a)
            seconds.append(b)
        n += len(pairs)
        offsets.append(n)
    fields = list(type_.value_type)
    values = pa.StructArray.from_arrays([pa.array(firsts, pa.string()), pa.array(seconds, pa.string())],
                                        fields=fields)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=type_)


def _steps(records: list[Any]) -> pa.Array:
    return _pairs_array([[(s.question, s.answer) for s in r.steps] for r in records], _STEPS)


_SUBSTEP = _maker(SubStep)


def _substeps(rows: list[tuple[str, str]] | None, seen: dict[tuple[str, str], SubStep]) -> tuple[SubStep, ...]:
    """A row's steps; ``seen``: the steps made for this batch so far (frozen, so one object serves every row with
    the same step: generated and sampled data repeat their steps a lot, and a lookup costs a tenth of a new one)."""
    if not rows:
        return ()
    out = []
    for pair in rows:
        step = seen.get(pair)
        if step is None:
            step = seen[pair] = _SUBSTEP(*pair)
        out.append(step)
    return tuple(out)


_ZSTD = "zstd" if pa.Codec.is_available("zstd") else None
"""Rationales and top-k signals (JSON) compress about 3x; a batch is decompressed as it is read."""

_EXAMPLE, _GENERATION, _TRAINING = _maker(Example), _maker(Generation), _maker(TrainingExample)


def _with_steps(make: Callable[..., T], rows: Iterable[tuple[Any, ...]]) -> list[T]:
    """Records from rows of four values, the steps and the metadata (examples, generations)."""
    seen: dict[tuple[str, str], SubStep] = {}
    return [make(*row[:4], _substeps(row[4], seen), row[5]) for row in rows]

EXAMPLES: Kind[Example] = Kind(
    "examples",
    pa.schema([("id", pa.string()), ("question", pa.string()), ("answer", pa.string()),
               ("rationale", pa.string()), ("steps", _STEPS), ("meta", pa.string())]),
    lambda rs: {"id": [e.id for e in rs], "question": [e.question for e in rs], "answer": [e.answer for e in rs],
                "rationale": [e.rationale for e in rs], "steps": _steps(rs), "meta": [_json(e.meta) for e in rs]},
    lambda c: _with_steps(_EXAMPLE, zip(c["id"], c["question"], c["answer"], c["rationale"], c["steps"],
                                        _unjson_all(c["meta"]))))

GENERATIONS: Kind[Generation] = Kind(
    "generations",
    pa.schema([("example_id", pa.string()), ("sample_index", pa.int32()), ("rationale", pa.string()),
               ("answer_text", pa.string()), ("steps", _STEPS), ("meta", pa.string())]),
    lambda rs: {"example_id": [g.example_id for g in rs], "sample_index": [g.sample_index for g in rs],
                "rationale": [g.rationale for g in rs], "answer_text": [g.answer_text for g in rs],
                "steps": _steps(rs), "meta": [_json(g.meta) for g in rs]},
    lambda c: _with_steps(_GENERATION, zip(c["example_id"], c["sample_index"], c["rationale"], c["answer_text"],
                                           c["steps"], _unjson_all(c["meta"]))),
    _ZSTD)


@dataclass(frozen=True)
class Grade:
    """The filter's verdict on one generation (the generation itself stays in the teach stage's file)."""

    prediction: str | None
    correct: bool


_GRADE = _maker(Grade)

GRADES: Kind[Grade] = Kind(
    "grades",
    pa.schema([("prediction", pa.string()), ("correct", pa.bool_())]),
    lambda rs: {"prediction": [g.prediction for g in rs], "correct": [g.correct for g in rs]},
    lambda c: [_GRADE(p, bool(k)) for p, k in zip(c["prediction"], c["correct"])])


def _turns(rows: list[tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    return tuple(rows) if rows else ()


TRAINING: Kind[TrainingExample] = Kind(
    "training",
    pa.schema([("example_id", pa.string()), ("prompt", pa.string()), ("target", pa.string()), ("role", pa.string()),
               ("weight", pa.float64()), ("turns", _TURNS), ("signals", pa.string())]),
    lambda rs: {"example_id": [t.example_id for t in rs], "prompt": [t.prompt for t in rs],
                "target": [t.target for t in rs], "role": [t.role for t in rs], "weight": [t.weight for t in rs],
                "turns": _pairs_array([t.turns for t in rs], _TURNS),
                "signals": [_json(dict(t.signals)) for t in rs]},
    lambda c: [_TRAINING(*row[:5], _turns(row[5]), row[6]) for row in zip(
        c["example_id"], c["prompt"], c["target"], c["role"], c["weight"], c["turns"], _unjson_all(c["signals"]))],
    _ZSTD)


def _pylist(column: pa.Array) -> list[Any]:
    """A column's values; a list of pairs (steps, turns) as lists of tuples, read field by field (several times
    faster than a dictionary per pair)."""
    if not (pa.types.is_list(column.type) and pa.types.is_struct(column.type.value_type)):
        return column.to_pylist()
    flat = column.values
    pairs = list(zip(*(flat.field(i).to_pylist() for i in range(flat.type.num_fields))))
    offsets = column.offsets.to_pylist()
    valid = column.is_valid().to_pylist() if column.null_count else None
    return [pairs[offsets[i]:offsets[i + 1]] if valid is None or valid[i] else None for i in range(len(column))]


class RecordWriter(Generic[T]):
    """Writes records of one kind to an Arrow IPC file, ``batch_rows`` at a time. The file appears under its
    name only when the writer closes without an error (written beside it, then renamed), so a reader never sees
    half a file."""

    def __init__(self, path: Path, kind: Kind[T], batch_rows: int = BATCH_ROWS):
        self.path, self.kind, self.batch_rows = Path(path), kind, batch_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._sink = pa.OSFile(str(self._tmp), "wb")
        self._writer = pa.ipc.new_file(self._sink, kind.schema,
                                       options=pa.ipc.IpcWriteOptions(compression=kind.compression))
        self._buffer: list[T] = []
        self.rows = 0

    def write(self, records: Iterable[T]) -> int:
        """Add records; returns how many. Every ``batch_rows`` of them become one record batch on disk."""
        n = 0
        for record in records:
            self._buffer.append(record)
            n += 1
            if len(self._buffer) >= self.batch_rows:
                self._flush()
        self.rows += n
        return n

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_batch(self.kind.batch(self._buffer))
            self._buffer = []

    def write_batch(self, batch: pa.RecordBatch) -> int:
        """Add records already made into a batch (``Kind.batch``), after any buffered ones, stored as batches of
        at most ``batch_rows`` (what a reader holds at a time); returns how many."""
        self._flush()
        for start in range(0, batch.num_rows, self.batch_rows):
            self._writer.write_batch(batch.slice(start, self.batch_rows))
        self.rows += batch.num_rows
        return batch.num_rows

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._sink.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        for close in (self._writer.close, self._sink.close):
            try:
                close()
            except Exception:  # already broken: nothing more to save
                pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> RecordWriter[T]:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def file_digest(path: Path) -> str:
    """A short content hash of a file, read 1 MiB at a time."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Any iterable in lists of ``size`` (the last one shorter), read as it goes."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ChunkSizer:
    """How many questions the next chunk takes, bounded by count and by bytes: as many as fit ``budget`` bytes of
    output at the bytes per question seen so far, at most ``most``; the first chunk takes ``first``. Long
    rationales (thousands of tokens each) then come in small chunks, short ones in chunks of ``most``."""

    def __init__(self, most: int, budget: int = 64 << 20, first: int = 1024):
        self.most, self.budget = most, budget
        self.size = min(first, most)
        self._questions = self._bytes = 0

    def saw(self, questions: int, size: int) -> None:
        """A chunk of ``questions`` made ``size`` bytes (its text and signals)."""
        self._questions += questions
        self._bytes += size
        per = self._bytes / max(1, self._questions)
        self.size = max(1, min(self.most, int(self.budget / max(per, 1.0))))

    def spans(self, total: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` rows of ``total`` in spans of the current ``size`` (set again by ``saw`` between
        spans; a span handed out keeps its size)."""
        start = 0
        while start < total:
            stop = min(total, start + self.size)
            yield start, stop
            start = stop


def generation_bytes(g: Generation) -> int:
    """About what a generation weighs in memory as text: its rationale, answer and metadata."""
    return len(g.rationale) + len(g.answer_text) + (len(json.dumps(g.meta)) if g.meta else 0)


def write_records(path: Path, kind: Kind[T], records: Iterable[T]) -> int:
    """Write every record to ``path``; returns how many."""
    with RecordWriter(path, kind) as out:
        return out.write(records)


_STARTS: dict[tuple[str, int, int, int], list[int]] = {}
"""Where each record batch of a file starts, per file version (stage files are replaced whole, never changed):
a worker process opening the same file for every chunk counts its rows once."""


def _batch_starts(path: Path, kind: Kind[Any]) -> list[int]:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _STARTS:
        # one narrow column read (and, in a compressed file, decompressed) per batch, only to count its rows
        narrow = next((i for i, f in enumerate(kind.schema) if pa.types.is_primitive(f.type)), 0)
        with pa.memory_map(str(path)) as f:
            reader = pa.ipc.open_file(f, options=pa.ipc.IpcReadOptions(included_fields=[narrow]))
            starts = [0]
            for i in range(reader.num_record_batches):
                starts.append(starts[-1] + reader.get_batch(i).num_rows)
        if len(_STARTS) > 64:
            _STARTS.clear()
        _STARTS[key] = starts
    return _STARTS[key]


class RecordTable(Sequence[T]):
    """The records of an Arrow IPC file as a read-only sequence: ``len``, ``[i]``, slices and iteration read one
    record batch at a time (the last one read is kept), so memory does not grow with the file."""

    def __init__(self, path: Path, kind: Kind[T]):
        self.path, self.kind = Path(path), kind
        self._starts = _batch_starts(self.path, kind)
        self._cached: tuple[int, list[T]] | None = None
        self._digest: str | None = None

    def __len__(self) -> int:
        return self._starts[-1]

    def digest(self) -> str:
        """A content hash of the file (what a cache of something made from these records is keyed by)."""
        if self._digest is None:
            self._digest = file_digest(self.path)
        return self._digest

    def _batch(self, index: int) -> list[T]:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        with pa.memory_map(str(self.path)) as f:  # unmapped again at once: memory holds one batch's records
            records = self.kind.records(pa.ipc.open_file(f).get_batch(index))
        self._cached = (index, records)
        return records

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        b = bisect.bisect_right(self._starts, i) - 1
        return self._batch(b)[i - self._starts[b]]

    def __iter__(self) -> Iterator[T]:
        for chunk in self.batches():
            yield from chunk

    def batches(self) -> Iterator[list[T]]:
        """The records, one stored batch (a list) at a time."""
        for b in range(len(self._starts) - 1):
            yield self._batch(b)

    def chunks(self, size: int) -> Iterator[list[T]]:
        """The records in lists of ``size`` (the last one shorter)."""
        return chunked(self, size)

    def rows(self, start: int, stop: int) -> list[T]:
        """The records ``start`` to ``stop`` (exclusive), converting only those rows of the batches they lie in."""
        out: list[T] = []
        stop = min(stop, len(self))
        b = bisect.bisect_right(self._starts, start) - 1
        while start < stop:
            first, end = self._starts[b], self._starts[b + 1]
            if start == first and stop >= end:  # a whole batch: the cached conversion serves it
                out.extend(self._batch(b))
            else:
                with pa.memory_map(str(self.path)) as f:
                    out.extend(self.kind.records(pa.ipc.open_file(f).get_batch(b).slice(start - first,
                                                                                         min(stop, end) - start)))
            start, b = min(stop, end), b + 1
        return out

    def columns(self, start: int, stop: int, *names: str) -> list[list[Any]]:
        """The plain values of a few columns for rows ``start`` to ``stop`` (no records built; only those columns
        of the batches the rows lie in are read)."""
        fields = [self.kind.schema.get_field_index(n) for n in names]
        options = pa.ipc.IpcReadOptions(included_fields=sorted(fields))
        out: list[list[Any]] = [[] for _ in names]
        stop = min(stop, len(self))
        b = bisect.bisect_right(self._starts, start) - 1
        with pa.memory_map(str(self.path)) as f:
            reader = pa.ipc.open_file(f, options=options)
            while start < stop:
                first, end = self._starts[b], self._starts[b + 1]
                batch = reader.get_batch(b).slice(start - first, min(stop, end) - start)
                for values, name in zip(out, names):
                    values.extend(batch.column(name).to_pylist())
                start, b = min(stop, end), b + 1
        return out

    def column(self, name: str) -> Iterator[list[Any]]:
        """One column's plain values, batch by batch (no records built; only that column is read and, in a
        compressed file, decompressed)."""
        options = pa.ipc.IpcReadOptions(included_fields=[self.kind.schema.get_field_index(name)])
        for b in range(len(self._starts) - 1):
            with pa.memory_map(str(self.path)) as f:
                values = pa.ipc.open_file(f, options=options).get_batch(b).column(0).to_pylist()
            yield values


class TextView(Sequence[str]):
    """The whole text of each training pair (``TrainingExample.text()``), read from a sequence of pairs as it is
    needed: a student's corpus for a tokenizer built from scratch, without a second copy of the data."""

    def __init__(self, pairs: Sequence[TrainingExample]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [t.text() for t in self.pairs[i]]
        return self.pairs[i].text()

    def __iter__(self) -> Iterator[str]:
        return (t.text() for t in self.pairs)
