"""Token-level signals across tokenizers: a teacher's tokens and top-k alternatives, as text, carried onto the
student's tokens of the same text.

A teacher records, for the rationale it wrote, its tokens as text (``target_text``: they concatenate to the
rationale) and at each of them its k most likely tokens as text (``topk_text``) with their log-probabilities
(``topk_logprobs``). ``END`` (``None``) is the teacher's end of sequence. The student tokenizes the same text; then:

1. **Alignment by character span.** Each teacher token covers ``[a, b)`` of the text, each student token
   ``[c, d)`` (from its tokenizer's offsets). Both are compared on their *core*: the span without the whitespace at
   its ends, so that a byte-level BPE ``" the"``, a SentencePiece ``"▁the"`` and a word tokenizer's ``"the"`` of
   the same word are the same span. A student token whose core equals a teacher token's core is *aligned* with it;
   the teacher's end of sequence is aligned with the student's.
2. **Alternatives onto student ids.** At an aligned position the teacher's chosen token is the student's token there.
   Every other alternative is tokenized by the student as it would read mid-text (after an anchor character, so
   SentencePiece adds no word-start marker of its own): if its text is one student token, its mass goes to that
   token; if it is several, to the first of them. Alternatives that land on the same student token have their
   probabilities added. An alternative that cannot be tokenized (empty text: a special token; a piece of a UTF-8
   character) is left out: its mass joins the tail bucket (docs/strategies.md).
3. **Everything else learns the text.** A student token with no aligned teacher token (one side split a word the
   other kept whole) has no signal: the objective uses cross-entropy on it.

    student = to_student(signals, tokenizer)   # {"target_ids", "topk_ids", "topk_logprobs"} in the student's ids
    teacher_text(tokenizer, ids)               # a model teacher's tokens as text (for its ``target_text``)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

END = None
"""In ``target_text`` / ``topk_text``: the teacher's end-of-sequence token."""
VERSION = "align-2"
"""Changes whenever what ``to_student`` computes changes (token stores built with it are keyed by it)."""
ANCHOR = "."
"""The text an alternative is tokenized after, to read it as the student reads a token in the middle of a text."""
TEXT_SIGNALS = ("target_text", "topk_text")


def spans(texts: Sequence[str | None]) -> list[tuple[int, int]]:
    """Character span of each token in the concatenated text (``END``: an empty span at the end)."""
    out, at = [], 0
    for t in texts:
        n = len(t) if t else 0
        out.append((at, at + n))
        at += n
    return out


def core(text: str, span: tuple[int, int]) -> tuple[int, int] | None:
    """``span`` without the whitespace at its ends; None for a span of whitespace only (or empty)."""
    a, b = span
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if a < b else None


def align(text: str, teacher: Sequence[tuple[int, int]], student: Sequence[tuple[int, int]]) -> list[int | None]:
    """For each student span, the index of the teacher span with the same core (a span of whitespace only: with
    the same span), or None."""
    by_core: dict[tuple[int, int], int] = {}
    by_span: dict[tuple[int, int], int] = {}  # whitespace-only tokens align only on exactly the same span
    for i, span in enumerate(teacher):
        c = core(text, span)
        if c is not None:
            by_core.setdefault(c, i)
        elif span[0] < span[1]:
            by_span.setdefault(tuple(span), i)
    return [by_core.get(c) if (c := core(text, span)) is not None else by_span.get(tuple(span)) for span in student]


class StudentVocabulary:
    """How the student reads a piece of text in the middle of a rationale: its first token id, cached."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._anchor = self._ids(ANCHOR)
        self._first: dict[str, int | None] = {}

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def first(self, text: str | None) -> int | None:
        """The student's first token of ``text`` read mid-text; its EOS for ``END``; None when it has none (an
        empty text, a broken UTF-8 piece, or only unknown tokens)."""
        if text is END:
            return self.tokenizer.eos_token_id
        if not text or "\ufffd" in text:
            return None
        if text not in self._first:
            ids = self._ids(ANCHOR + text)
            n = len(self._anchor)
            rest = ids[n:] if ids[:n] == self._anchor and len(ids) > n else self._ids(text)
            unk = self.tokenizer.unk_token_id  # a text whose first token is unknown has no student token
            self._first[text] = int(rest[0]) if rest and (unk is None or rest[0] != unk) else None
        return self._first[text]


def _cached(tokenizer: Any) -> StudentVocabulary:
    vocabulary = getattr(tokenizer, "_harness_alignment", None)
    if vocabulary is None:
        vocabulary = StudentVocabulary(tokenizer)
        try:
            tokenizer._harness_alignment = vocabulary
        except AttributeError:
            pass
    return vocabulary


def map_position(chosen: int, alternatives: Sequence[str | None], logprobs: Sequence[float], chosen_text: str | None,
                 vocabulary: StudentVocabulary) -> tuple[list[int], list[float]]:
    """One aligned position: the teacher's alternatives (texts, log-probabilities) as student ids with merged
    log-probabilities, most likely first; the teacher's chosen text maps to ``chosen`` (the student's token)."""
    mass: dict[int, float] = {}
    for text, lp in zip(alternatives, logprobs):
        if lp is None or math.isnan(lp) or lp == float("-inf"):
            continue
        sid = chosen if text == chosen_text else vocabulary.first(text)
        if sid is None or sid < 0:
            continue  # to the tail
        mass[sid] = math.log(math.exp(mass[sid]) + math.exp(lp)) if sid in mass else float(lp)
    ranked = sorted(mass.items(), key=lambda kv: -kv[1])
    return [i for i, _ in ranked], [min(0.0, round(lp, 6)) for _, lp in ranked]


def to_student(signals: Mapping[str, Any], tokenizer: Any, ids: Sequence[int] | None = None) -> dict[str, list]:
    """The teacher's text signals (``target_text``, ``topk_text``, ``topk_logprobs``) as the student's:
    ``target_ids`` (the student's tokens of the same text, its EOS where the teacher ended), ``topk_ids`` and
    ``topk_logprobs`` per student token (empty lists where no teacher token is aligned, or none of its
    alternatives maps), and ``aligned``, the number of student tokens with a teacher signal.

    With ``ids`` (tokens the student produced itself, which need not be how its tokenizer would split their
    text): the signals are aligned with those tokens, whose spans come from their own texts; where the teacher's
    text is not theirs (it could not read a character), nothing is aligned."""
    texts = list(signals["target_text"])
    alternatives, logprobs = signals["topk_text"], signals["topk_logprobs"]
    ended = bool(texts) and texts[-1] is END
    body = texts[:-1] if ended else texts
    text = "".join(t or "" for t in body)
    eos = tokenizer.eos_token_id
    if ids is None:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = [int(t) for t in encoded["input_ids"]] + ([int(eos)] if ended and eos is not None else [])
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
    else:
        ids = [int(t) for t in ids]
        own = teacher_text(tokenizer, ids)
        offsets = spans([t for t in own if t is not END])
        if "".join(t or "" for t in own) != text:  # the teacher could not read it all (a word tokenizer's unknown
            return {"target_ids": ids, "topk_ids": [[] for _ in ids],  # word): its spans are not the student's
                    "topk_logprobs": [[] for _ in ids], "aligned": 0}
    matched = align(text, spans(body), offsets)
    matched += [len(texts) - 1 if ended and t == eos else None for t in ids[len(matched):]]  # the end is the end
    vocabulary = _cached(tokenizer)
    top_ids: list[list[int]] = []
    top_lps: list[list[float]] = []
    for sid, i in zip(ids, matched):
        if i is None:
            top_ids.append([])
            top_lps.append([])
            continue
        a, b = map_position(sid, alternatives[i], logprobs[i], texts[i], vocabulary)
        top_ids.append(a)
        top_lps.append(b)
    return {"target_ids": ids, "topk_ids": top_ids, "topk_logprobs": top_lps,
            "aligned": sum(1 for row in top_ids if row)}


def teacher_text(tokenizer: Any, ids: Sequence[int]) -> list[str | None]:
    """A model teacher's generated tokens as text, concatenating to what it wrote: each token's text is what it
    adds to the decoded sequence, as a streaming detokenizer emits it (a token that ends inside a UTF-8 character
    adds nothing; the one that completes it adds the character); its EOS is ``END``, other special tokens add
    nothing. Decoded after the anchor, so that no tokenizer drops the first token's leading space."""
    special = set(tokenizer.all_special_ids)
    eos = tokenizer.eos_token_id
    anchor = list(tokenizer(ANCHOR, add_special_tokens=False)["input_ids"])
    tokens: list[int] = []
    start = read = 0  # tokens[start:read] is the context already shown; tokens[read:] not shown yet
    out: list[str | None] = []
    for t in ids:
        t = int(t)
        if t == eos:
            out.append(END)
            continue
        if t in special:
            out.append("")
            continue
        tokens.append(t)
        shown = tokenizer.decode(anchor + tokens[start:read])
        now = tokenizer.decode(anchor + tokens[start:])
        if len(now) > len(shown) and not now.endswith("\ufffd") and now.startswith(shown):
            out.append(now[len(shown):])
            start, read = read, len(tokens)
        else:
            out.append("")  # shown with the token that completes it
    return out


def alternative_texts(tokenizer: Any, ids: Sequence[Sequence[int]]) -> list[list[str | None]]:
    """A model teacher's top-k ids as text, each read mid-text (after the anchor): ``END`` for its EOS, ``""`` for
    other special tokens and pieces of a UTF-8 character."""
    cache: dict[int, str | None] = getattr(tokenizer, "_harness_texts", None) or {}
    special = set(tokenizer.all_special_ids)
    eos = tokenizer.eos_token_id
    anchor = list(tokenizer(ANCHOR, add_special_tokens=False)["input_ids"])
    base = tokenizer.decode(anchor)
    out = []
    for row in ids:
        texts = []
        for t in row:
            t = int(t)
            if t not in cache:
                if t < 0:
                    cache[t] = ""
                elif t == eos:
                    cache[t] = END
                elif t in special:
                    cache[t] = ""
                else:
                    full = tokenizer.decode(anchor + [t])
                    piece = full[len(base):] if full.startswith(base) else tokenizer.decode([t])
                    cache[t] = "" if "\ufffd" in piece else piece
            texts.append(cache[t])
        out.append(texts)
    try:
        tokenizer._harness_texts = cache
    except AttributeError:
        pass
    return out


def text_problem(signals: Mapping[str, Any]) -> str | None:
    """What makes text signals unusable, or None: ``target_text`` not a list of strings (``END`` last only),
    ``topk_text`` not one list of strings per target token, as long as ``topk_logprobs``'s."""
    texts, alternatives = signals.get("target_text"), signals.get("topk_text")
    if texts is None and alternatives is None:
        return None
    if not isinstance(texts, list) or not isinstance(alternatives, list) or len(texts) != len(alternatives):
        return "target_text and topk_text must both be there, one entry per teacher token"
    for i, t in enumerate(texts):
        if not (isinstance(t, str) or (t is END and i == len(texts) - 1)):
            return f"target_text[{i}] = {t!r} is not a token's text"
    logprobs = signals.get("topk_logprobs")
    if not isinstance(logprobs, list) or len(logprobs) != len(alternatives):
        return "topk_logprobs must have one list per teacher token, as topk_text"
    for i, (row, lps) in enumerate(zip(alternatives, logprobs)):
        if not isinstance(row, list) or len(row) != len(lps):
            return f"topk_text[{i}] and topk_logprobs[{i}] differ in length"
        for j, t in enumerate(row):
            if not (t is END or isinstance(t, str)):
                return f"topk_text[{i}][{j}] = {t!r} is not a token's text"
    return None
