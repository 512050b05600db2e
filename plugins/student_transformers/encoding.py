"""Text to training rows: the word-level tokenizer built from scratch, prompt/target encoding with the prompt
masked out of the loss, the padding collator and the length-grouped, per-epoch seeded training order."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from harness import BadInputError, TrainingExample

SPECIALS = {"pad_token": "<pad>", "unk_token": "<unk>", "eos_token": "<eos>"}
_SPLIT = r"▁?(?:-->|###|[A-Za-z]+|\d+|[^A-Za-z\d▁])"


def train_word_tokenizer(corpus: Sequence[str]):
    """A word-level tokenizer over ``corpus`` with every number 0-99 as one token (with and without a space)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=SPECIALS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    numbers = " ".join(str(i) for i in range(100))
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIALS.values()), min_frequency=1,
                                        show_progress=False)  # the harness shows its own progress
    tok.train_from_iterator(itertools.chain([numbers, " " + numbers], corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS["eos_token"], **SPECIALS)


def prompt_ids(tokenizer, prompts: Sequence[str], encoder_decoder: bool) -> list[list[int]]:
    """Prompt tokens as the model family expects them, the way lm-eval encodes contexts: the tokenizer's own
    special tokens (Llama's BOS; T5's closing EOS on the encoder side), never an EOS closing a decoder-only
    prompt (the target follows it)."""
    ids = tokenizer(list(prompts))["input_ids"]
    eos = tokenizer.eos_token_id
    if not encoder_decoder:
        ids = [p[:-1] if p and p[-1] == eos and eos is not None else p for p in ids]
    return ids


def encode(tokenizer, examples: Sequence[TrainingExample], max_length: int,
           encoder_decoder: bool = False, chat: Any = None) -> list[dict[str, list[int]]]:
    """Token ids with EOS closing every target, truncated to ``max_length``. Decoder-only: one sequence, the
    prompt masked out of the labels (-100). Encoder-decoder: the prompt is the encoder's input, the target
    (+ EOS) the labels. A conversation (``turns``) is one decoder-only sequence, each piece tokenized on its own
    (so every target starts on a token boundary, as at inference), contexts masked, EOS after the last target.
    With ``chat`` (a ``ChatFormat``): the prompt as the user turn, the target as the assistant turn; the loss on
    the assistant's tokens and the template's end-of-turn, no EOS added."""
    if chat is not None:
        return _encode_chat(tokenizer, examples, max_length, chat)
    if encoder_decoder and any(e.turns for e in examples):
        raise BadInputError("strategy: its training examples are conversations (several targets in one "
                            "sequence), which an encoder-decoder student cannot learn in one pass; use a "
                            "decoder-only student or the strategy's one-example-per-turn form")
    prompts = prompt_ids(tokenizer, [e.prompt for e in examples], encoder_decoder)
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    pieces = [piece for e in examples for turn in e.turns for piece in turn]
    piece_ids = iter(tokenizer(pieces, add_special_tokens=False)["input_ids"] if pieces else [])
    eos = tokenizer.eos_token_id
    weighted = any(e.weight != 1.0 for e in examples)
    vocabulary = len(tokenizer)
    rows = []
    for p, t, e in zip(prompts, targets, examples):
        signals = e.signals or {}
        if "target_text" in signals and "target_ids" not in signals:  # a teacher of another tokenizer
            signals = _from_text(e, signals, tokenizer)
        elif "target_text" in signals:  # the same tokens as ids and as text: the ids are the student's
            signals = {k: v for k, v in signals.items() if k not in ("target_text", "topk_text")}
        if signals:
            _check_ids(e, signals, vocabulary)
        if encoder_decoder:
            ids, labels = p[:max_length], (t + [eos])[:max_length]
        elif "target_ids" in signals:  # the teacher's own tokens (EOS included), not a re-tokenized text
            t = [int(x) for x in signals["target_ids"]]
            ids, labels = (p + t)[:max_length], ([-100] * len(p) + t)[:max_length]
        else:
            ids, labels = p + t, [-100] * len(p) + t
            for _ in e.turns:
                context, target = next(piece_ids), next(piece_ids)
                ids, labels = ids + context + target, labels + [-100] * len(context) + target
            ids, labels = (ids + [eos])[:max_length], (labels + [eos])[:max_length]
        row: dict = {"input_ids": ids, "labels": labels, **({"weight": e.weight} if weighted else {})}
        if signals and not encoder_decoder:  # aligned with the target tokens, after the prompt
            row.update(signal_fields(e, signals, len(p), len(ids)))
        rows.append(row)
    return rows


RESERVED = ("input_ids", "labels", "attention_mask", "weight", "weights", "num_items")
"""Batch keys of the harness's own: a strategy's signal may not use these names."""


def pad_value(name: str) -> float:
    """What fills a signal where it has no value (the prompt, padding, an unused top-k slot): -1 for token ids
    (a name ending in ``_ids``), -inf for log-probabilities (a name ending in ``logprobs``), else 0."""
    return -1 if name.endswith("_ids") else float("-inf") if name.endswith("logprobs") else 0.0


def signal_fields(example: TrainingExample, signals, prompt_length: int, length: int) -> dict[str, Any]:
    """A pair's signals as row fields: every per-token signal (one value, or one list of values, per token of
    ``target_ids``) placed at its token's position after the prompt and cut to ``length``; every number as a
    per-row value. Anything else cannot reach a loss and is refused, never dropped."""
    target = signals.get("target_ids")
    out: dict[str, Any] = {}
    for name, value in signals.items():
        if name == "target_ids":
            continue
        where = f"strategy: training pair {example.example_id!r}: signals[{name!r}]"
        if name in RESERVED:
            raise BadInputError(f"{where}: the name is the harness's own batch key; rename the signal")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
            continue
        if not isinstance(value, (list, tuple)) or target is None or len(value) != len(target):
            raise BadInputError(f"{where} is neither a number nor one value per target token (a per-token signal "
                                f"needs target_ids, the tokens it is aligned with, and one entry for each); the "
                                f"student cannot carry it into the loss")
        pad = pad_value(name)
        if value and isinstance(value[0], (list, tuple)):
            width = max((len(x) for x in value), default=1) or 1
            none = [pad] * width
            out[name] = ([none] * prompt_length + [list(x) + none[len(x):] for x in value])[:length]
        else:
            out[name] = ([pad] * prompt_length + list(value))[:length]
    return out


def _from_text(example: TrainingExample, signals, tokenizer) -> dict:
    """Text signals (``harness.alignment``) as the student's own token ids, aligned by text."""
    from harness import alignment

    problem = alignment.text_problem(signals)
    if problem:
        raise BadInputError(f"strategy: training pair {example.example_id!r}: {problem}")
    mapped = alignment.to_student(signals, tokenizer)
    mapped.pop("aligned")
    rest = {k: v for k, v in signals.items() if k not in (*alignment.TEXT_SIGNALS, "topk_logprobs")}
    per_token = [k for k, v in rest.items() if isinstance(v, (list, tuple))]
    if per_token:
        raise BadInputError(f"strategy: training pair {example.example_id!r}: signals[{per_token[0]!r}] is per "
                            f"teacher token, and the teacher's tokens are not the student's; only topk_text and "
                            f"topk_logprobs are carried across tokenizers")
    return {**rest, **mapped}


def _check_ids(example: TrainingExample, signals, vocabulary: int) -> None:
    """Token ids in a pair's signals must be the student's: an id past its vocabulary would fail deep inside
    training (an IndexError in the embedding), after the teacher was paid."""
    top = max((max(row) for row in signals.get("topk_ids") or () if row), default=-1)
    target = max(signals.get("target_ids") or (), default=-1)
    if max(top, target) >= vocabulary:
        raise BadInputError(f"strategy: training pair {example.example_id!r} carries the teacher's token id "
                            f"{max(top, target)}, outside the student's vocabulary ({vocabulary} tokens); the "
                            f"student needs the teacher's tokenizer (student.tokenizer = \"<the teacher's folder>\")")


def _encode_chat(tokenizer, examples: Sequence[TrainingExample], max_length: int, chat: Any) -> list[dict]:
    if any(e.turns or any((e.signals or {}).get(k) for k in ("target_ids", "topk_ids", "target_text"))
           for e in examples):
        raise BadInputError("student.chat_template: this strategy trains on conversations or on the teacher's own "
                            "tokens, which the harness does not render through a chat template yet; set "
                            "chat_template = \"off\" for this student")
    weighted = any(e.weight != 1.0 for e in examples)
    split = [chat.split(e.prompt, e.target.strip()) for e in examples]
    prefixes = tokenizer([p for p, _ in split], add_special_tokens=False)["input_ids"]  # as lm-eval encodes it
    answers = tokenizer([a for _, a in split], add_special_tokens=False)["input_ids"]
    return [{"input_ids": (p + a)[:max_length], "labels": ([-100] * len(p) + a)[:max_length],
             **({"weight": e.weight} if weighted else {})} for p, a, e in zip(prefixes, answers, examples)]


def useful_tokens(row: dict[str, list[int]]) -> int:
    """Non-padding tokens a row puts through the model (encoder input + decoder labels for encoder-decoder)."""
    n = len(row["input_ids"])
    return n if len(row["labels"]) == n else n + len(row["labels"])


def signal_tensors(rows: list[dict], width: int) -> dict:
    """Each signal of the rows as one tensor aligned with the batch's labels: a per-token list of lists ->
    [batch, width, k] (``topk_ids``, ``topk_logprobs``), a per-token list -> [batch, width], a per-row number ->
    [batch]; filled with ``pad_value`` where a row has none. Token ids (``*_ids``) are integers, the rest
    float32."""
    import torch

    names = [n for n in dict.fromkeys(k for r in rows for k in r) if n not in ("input_ids", "labels", "weight")]
    out = {}
    for name in names:
        pad = pad_value(name)
        dtype = torch.long if name.endswith("_ids") else torch.float32
        sample = next(r[name] for r in rows if name in r)
        if isinstance(sample, (int, float)):
            out[name] = torch.tensor([float(r.get(name, pad)) for r in rows], dtype=dtype)
        elif sample and isinstance(sample[0], (list, tuple)):
            k = max((len(x) for r in rows for x in r.get(name) or ()), default=1) or 1
            none = [pad] * k
            values = [[list(x) + none[len(x):] for x in r.get(name) or ()] for r in rows]
            out[name] = torch.tensor([v + [none] * (width - len(v)) for v in values], dtype=dtype)
        else:
            values = [list(r.get(name) or ()) for r in rows]
            out[name] = torch.tensor([v + [pad] * (width - len(v)) for v in values], dtype=dtype)
    return out


class Collator:
    """Right-pads a batch to its own longest row (labels separately: they differ in length for encoder-decoder
    models); counts the real (non-padding) tokens it has seen."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.tokens = 0
        self.computed = 0
        """Input positions put through the model, padding included (the encoder input for encoder-decoder models)."""

    def __call__(self, rows: list[dict[str, list[int]]]):
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        label_width = max(len(r["labels"]) for r in rows)
        self.tokens += sum(useful_tokens(r) for r in rows)
        self.computed += width * len(rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), label_width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :len(r["labels"])] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if "weight" in rows[0]:
            batch["weights"] = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
        batch.update(signal_tensors(rows, width))
        return batch


class LengthGroupedSampler:
    """Training order with little padding, reproducible per epoch: each epoch's order depends only on
    (seed, epoch), never on the global random state, so a run resumed mid-epoch sees the same batches as one
    never interrupted. Indices are shuffled, cut into megabatches of 50 optimizer batches, sorted by length
    inside each, cut into optimizer batches (``group`` rows: micro-batches x accumulation x processes) whose order
    is shuffled, the longest batch first (memory trouble shows at step 1, not hours in)."""

    def __init__(self, lengths: Sequence[int], group: int, seed: int):
        import numpy as np

        self.lengths = np.asarray(lengths, dtype=np.int64)  # a token store's column stays one array
        self.group, self.seed, self.epoch = max(1, group), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import numpy as np
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).numpy()
        mega = self.group * 50
        batches = []
        for start in range(0, len(order), mega):
            chunk = order[start: start + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]  # longest first, ties in shuffled order
            batches += [chunk[i: i + self.group] for i in range(0, len(chunk), self.group)]
        if not batches:
            return iter([])
        longest = int(np.argmax([self.lengths[b].max() for b in batches]))
        first = batches.pop(longest)
        rest = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return iter(np.concatenate([first, *rest]))  # numpy indices: no list of a million Python ints
