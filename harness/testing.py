"""Helpers for testing harness plugins (public API).

- ``plugin_registered(module)`` registers a plugin for the duration of a ``with`` block, so ``harness`` commands
  run in-process (``harness.cli.main([...])``) and pipelines see it without installing a package. It works the
  same when the module is also installed through its entry point (it is then registered once).
- Inside that block the teachers ``fake`` (``FakeTeacher``: a fixed rationale and the gold answer) and
  ``fake_topk`` (``FakeTopKTeacher``: the same with top-k log-probabilities at every token, for token-level
  strategies and objectives) are registered too, so a recipe can use ``[teacher] kind = "fake"``.
- ``tiny_tokenizer(folder)`` saves a word-level tokenizer for that task: the ``tokenizer`` a token-level test
  gives both ``fake_topk`` and the student (``kind = "byte_bpe"`` or ``"sentencepiece"``: a BPE one, for tests
  across tokenizers).
- ``tiny_recipe(folder, ...)`` gives a recipe that runs end to end in seconds (a 1-layer GPT-2 on 200 synthetic
  problems); with ``path`` it writes the file, and ``overrides`` change any key as ``harness run --set`` does.

Example::

    from harness.cli import main
    from harness.testing import plugin_registered, tiny_recipe
    import my_plugin

    def test_runs_end_to_end(tmp_path):
        recipe = tiny_recipe(tmp_path, 'kind = "my_strategy"', path=tmp_path / "r.toml",
                             overrides=["evaluation.max_gen_toks=48", 'teacher.kind="fake"'])
        with plugin_registered(my_plugin):
            assert main(["run", str(recipe)]) == 0
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness._run.registry import EXTRA_PLUGINS
from harness.components import Teacher
from harness.hookspecs import hookimpl
from harness.types import Example, Generation


@dataclass(frozen=True)
class FakeTeacherConfig:
    rationale: str = "Because."
    """The rationale every sample gets."""
    answer: str = ""
    """The answer every sample gives; empty: the gold answer."""
    samples: int = 1

    def check(self) -> list[tuple[str, str]]:
        return [("samples", "must be at least 1")] if self.samples < 1 else []


class FakeTeacher(Teacher):
    """A teacher that answers every question with a fixed rationale and the gold answer (or a fixed one).
    In a recipe (inside ``plugin_registered``): ``[teacher] kind = "fake"`` with the keys of
    ``FakeTeacherConfig``."""

    Config = FakeTeacherConfig

    def __init__(self, config: FakeTeacherConfig | None = None, *, rationale: str | None = None,
                 answer: str | None = None, samples: int | None = None):
        c = config or FakeTeacherConfig()
        self.rationale = c.rationale if rationale is None else rationale
        self.answer = (c.answer or None) if answer is None else answer
        self.samples = c.samples if samples is None else samples

    def generate(self, examples: Sequence[Example], task: Any, progress) -> list[list[Generation]]:
        out = []
        for e in examples:
            out.append([Generation(e.id, i, self.rationale, self.answer if self.answer is not None else e.answer)
                        for i in range(self.samples)])
            progress(1)
        return out


@dataclass(frozen=True)
class FakeTopKConfig:
    tokenizer: str = ""
    """The teacher's tokenizer (a folder or hub id); a token-level student must use the same one."""
    rationale: str = "Because."
    answer: str = ""
    """Empty: the gold answer."""
    target: str = " {rationale} --> {answer}"
    """The text the teacher writes, as the student will learn it (``{rationale}``, ``{answer}``): Fine-tune-CoT's
    token format by default; give a strategy's own format to test it."""
    top_k: int = 4
    samples: int = 1

    def check(self) -> list[tuple[str, str]]:
        problems = [] if self.tokenizer else [("tokenizer", "required: the folder or hub id of a tokenizer")]
        if self.top_k < 1:
            problems.append(("top_k", "must be at least 1"))
        if self.samples < 1:
            problems.append(("samples", "must be at least 1"))
        return problems


class FakeTopKTeacher(Teacher):
    """A teacher with token-level signals and no model, for testing token-level strategies and objectives: it
    writes ``target`` for every sample and records, at each of its tokens (EOS closing), the token itself with
    probability 0.6 and ``top_k - 1`` other ids (the next ones in the vocabulary) sharing 0.3, so 0.1 is left
    to the tail. In a recipe (inside ``plugin_registered``): ``[teacher] kind = "fake_topk"``,
    ``tokenizer = "<folder>"``, with the student's ``tokenizer`` the same folder."""

    Config = FakeTopKConfig

    def __init__(self, config: FakeTopKConfig):
        self.config = config
        self._tok: Any = None

    def signals(self) -> tuple[str, ...]:
        return ("topk",)

    def vocabulary(self) -> str | None:
        from harness.models import tokenizer_vocabulary

        return tokenizer_vocabulary(self.config.tokenizer)

    def preflight(self) -> list[tuple[str, str]]:
        from harness.models import model_problems

        return model_problems(self.config.tokenizer, "tokenizer", config=False)

    def generate(self, examples: Sequence[Example], task: Any, progress) -> list[list[Generation]]:
        import math

        from transformers import AutoTokenizer

        c = self.config
        if self._tok is None:
            self._tok = AutoTokenizer.from_pretrained(c.tokenizer)
        tok, size = self._tok, len(self._tok)
        out = []
        for e in examples:
            answer = c.answer or e.answer
            ids = tok(c.target.format(rationale=c.rationale, answer=answer), add_special_tokens=False)["input_ids"]
            ids = [int(t) for t in ids] + ([tok.eos_token_id] if tok.eos_token_id is not None else [])
            others = [math.log(0.3 / (c.top_k - 1))] * (c.top_k - 1)
            signals = {"target_ids": ids, "topk_ids": [[t] + [(t + j) % size for j in range(1, c.top_k)] for t in ids],
                       "topk_logprobs": [[round(math.log(0.6), 4)] + [round(x, 4) for x in others] for _ in ids]}
            out.append([Generation(e.id, i, c.rationale, answer, meta={"signals": signals})
                        for i in range(c.samples)])
            progress(1)
        return out


TOKENIZER_KINDS = ("word", "byte_bpe", "sentencepiece")


def tiny_tokenizer(folder: str | Path, texts: Sequence[str] = (), kind: str = "word", vocab_size: int = 400) -> Path:
    """A tokenizer for ``tiny_recipe``'s task (its questions, answers and rationales, every number 0-99, and
    ``texts``), saved to ``folder`` and returned: what a token-level test needs, since the teacher (``fake_topk``)
    and the student share a tokenizer folder, or, across tokenizers, have different ones. ``kind``: ``word``
    (whole words, the student's default), ``byte_bpe`` (GPT-2's convention: a leading space is part of the token,
    every byte representable) or ``sentencepiece`` (Llama's: ``▁`` marks a word start, unknown characters as
    byte tokens), the last two BPE with ``vocab_size`` tokens."""
    from harness.components import create
    from harness_builtins.student_transformers.encoding import train_word_tokenizer

    splits = create("task", "synthetic_arithmetic", train_size=200, validation_size=0, test_size=8).load()
    corpus = [f"{e.question} ### {e.rationale} --> {e.answer}" for split in splits.values() for e in split]
    corpus = [*corpus, *texts, "Because. -->"]
    if kind == "word":
        tokenizer = train_word_tokenizer(corpus)
    elif kind in TOKENIZER_KINDS:
        tokenizer = _bpe_tokenizer(corpus, kind, vocab_size)
    else:
        raise ValueError(f"kind: '{kind}': choose from {', '.join(TOKENIZER_KINDS)}")
    tokenizer.save_pretrained(str(folder))
    return Path(folder)


def _bpe_tokenizer(corpus: Sequence[str], kind: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {"eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    numbers = [" ".join(str(i) for i in range(100))]
    if kind == "byte_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials.values()),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        specials.pop("unk_token")
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first"),
                                         decoders.ByteFallback(), decoders.Fuse()])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size + 256, show_progress=False, special_tokens=[
            *specials.values(), *(f"<0x{i:02X}>" for i in range(256))])
    tok.train_from_iterator([*numbers, *corpus], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials["eos_token"], **specials)


class _TestingPlugin:
    """Registers the helpers' own components (the ``fake`` and ``fake_topk`` teachers)."""

    @hookimpl
    def register_teachers(self, register):
        register("fake", FakeTeacher)
        register("fake_topk", FakeTopKTeacher)


TESTING_PLUGIN = _TestingPlugin()


@contextlib.contextmanager
def plugin_registered(*plugins: Any) -> Iterator[None]:
    """Register plugin modules (or objects with ``@hookimpl`` methods), and the ``fake`` teacher, while the block
    runs."""
    added = [*plugins, *([] if TESTING_PLUGIN in EXTRA_PLUGINS else [TESTING_PLUGIN])]
    EXTRA_PLUGINS.extend(added)
    try:
        yield
    finally:
        for plugin in added:
            EXTRA_PLUGINS.remove(plugin)


def tiny_recipe(output_dir: str | Path, strategy: str = 'kind = "fine_tune_cot"', steps: int = 20,
                max_gen_toks: int = 24, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Any:
    """A recipe that runs end to end in seconds: 200 synthetic problems, the program teacher, a 1-layer GPT-2.

    Args:
        output_dir: where its ``runs/`` and ``results/`` go.
        strategy: the body of its ``[[strategy]]`` table (TOML lines).
        steps: training steps.
        max_gen_toks: ``evaluation.max_gen_toks``.
        path: where to write it. Given: the file is written and its ``Path`` returned; else the TOML text is.
        overrides: ``key=value`` changes applied as ``harness run --set`` applies them (``teacher.kind="fake"``).
    """
    from harness._run.recipe import apply_overrides

    text = _TINY.format(out=Path(output_dir).as_posix(), strategy=strategy, steps=steps, max_gen_toks=max_gen_toks)
    if overrides:
        data = tomllib.loads(text)
        apply_overrides(data, overrides)
        text = _dump_toml(data)
    if path is None:
        return text
    Path(path).write_text(text)
    return Path(path)


_TINY = """[run]
name = "tiny"
output_dir = "{out}/runs"

[task]
kind = "synthetic_arithmetic"
train_size = 200
validation_size = 0
test_size = 8

[teacher]
kind = "program"
samples = 2
temperature = 0.7

[[strategy]]
{strategy}

[[student]]
kind = "transformers"
tokenizer = "word"
architecture = {{ model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, n_positions = 256 }}

[training]
max_steps = {steps}
batch_size = 16

[evaluation]
max_gen_toks = {max_gen_toks}

[[sink]]
kind = "local"
dir = "{out}/results"
"""


def _value(v: Any) -> str:
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def _dump_toml(data: Mapping[str, Any]) -> str:
    """Recipes as TOML: top-level tables and arrays of tables; nested tables inline."""
    lines: list[str] = []
    for key, value in data.items():
        tables = value if isinstance(value, list) and value and all(isinstance(t, Mapping) for t in value) else None
        for table in tables or ([value] if isinstance(value, Mapping) else []):
            lines.append(f"[[{key}]]" if tables else f"[{key}]")
            lines += [f"{k} = {_value(v)}" for k, v in table.items()]
            lines.append("")
    return "\n".join(lines)
