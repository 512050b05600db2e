"""The teacher bill before the run (`harness estimate`): the requests it predicts are the requests the teach stage
then sends (against a real HTTP server on 127.0.0.1), minus what the cache holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness_builtins.task_synthetic import Config as TaskConfig
from harness_builtins.task_synthetic import SyntheticArithmetic
from harness_builtins.teacher_openai import Config, OpenAITeacher

from .fake_openai import FakeOpenAI

TASK = SyntheticArithmetic(TaskConfig(train_size=8, validation_size=0, test_size=1))
EXAMPLES = TASK.load()["train"]


def whitespace_tokenizer(path: Path) -> Path:
    """A tokenizer that counts tokens as the fake server does (runs of non-space characters)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "</s>": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>").save_pretrained(path)
    return path


def teacher(server, tmp_path, **options) -> OpenAITeacher:
    settings = {"model": "m", "base_url": server.base_url, "api_key_env": "", "cache_dir": str(tmp_path / "cache"),
                "backoff_base": 0.01, "timeout": 5.0} | options
    return OpenAITeacher(Config(**settings))


def test_the_estimate_is_what_the_teach_stage_sends_minus_the_cache(tmp_path):
    options = {"samples": 2, "temperature": 0.7, "max_tokens": 64, "answer_max_tokens": 8,
               "price_per_million_input": 2.0, "price_per_million_output": 8.0}
    with FakeOpenAI() as server:
        teacher(server, tmp_path, **options).generate(EXAMPLES[:3], TASK, lambda n: None)  # 3 questions cached
        before = server.requests
        est = teacher(server, tmp_path, **options).estimate(EXAMPLES, TASK)
        assert server.requests == before  # estimating sends nothing
        t = teacher(server, tmp_path, **options)
        t.generate(EXAMPLES, TASK, lambda n: None)
        used = t.usage()
        after = teacher(server, tmp_path, **options).estimate(EXAMPLES, TASK)
    # 5 new questions: one n=2 request each, then one answer request per rationale
    assert est.requests == used.requests == 5 + 10
    assert est.cached == used.cached == 3 * 2 + 3 * 2
    assert used.output_tokens <= est.output_tokens == 5 * 2 * 64 + 10 * 8
    assert used.input_tokens <= est.input_tokens and not est.tokens_counted
    assert est.cost == pytest.approx((est.input_tokens * 2.0 + est.output_tokens * 8.0) / 1e6)
    assert any("longest rationale" in n for n in est.notes)
    assert (after.requests, after.cached, after.cost) == (0, 8 * 4, 0.0)  # all of it cached now


def test_prompt_tokens_counted_with_the_tokenizer_match_the_servers_count(tmp_path):
    tokenizer = whitespace_tokenizer(tmp_path / "tok")
    options = {"prompt": "fine_tune_cot", "tokenizer": str(tokenizer), "max_tokens": 32}
    with FakeOpenAI() as server:
        est = teacher(server, tmp_path, **options).estimate(EXAMPLES, TASK)
        t = teacher(server, tmp_path, **options)
        t.generate(EXAMPLES, TASK, lambda n: None)
    used = t.usage()
    assert est.tokens_counted and est.requests == used.requests == len(EXAMPLES)
    assert est.input_tokens == used.input_tokens  # counted, not estimated
    assert not any("estimated" in n for n in est.notes)


RECIPE = """\
[run]
name = "bill"
output_dir = "{out}"

[task]
kind = "synthetic_arithmetic"
train_size = 6
validation_size = 0
test_size = 2

[teacher]
kind = "{teacher}"
{teacher_lines}

[[strategy]]
kind = "fine_tune_cot"

[[student]]
kind = "transformers"
tokenizer = "word"
architecture = {{ model_type = "gpt2", n_layer = 1, n_embd = 16, n_head = 2, n_positions = 128 }}
"""


def test_harness_estimate_prints_the_bill(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    with FakeOpenAI() as server:
        lines = (f'model = "m"\nbase_url = "{server.base_url}"\napi_key_env = ""\nprice_per_million_input = 1.0\n'
                 'price_per_million_output = 4.0')
        recipe = tmp_path / "bill.toml"
        recipe.write_text(RECIPE.format(out=tmp_path, teacher="openai", teacher_lines=lines))
        result = cli("estimate", recipe, "--json", tmp_path / "bill.json")
        assert server.requests == 0
    assert result.code == 0, result.err
    assert "requests to send" in result.out and "≈" in result.out and "$" in result.out
    import json

    figures = json.loads((tmp_path / "bill.json").read_text())
    assert figures["requests"] == 6 + 6 and figures["cached"] == 0 and figures["tokens_counted"] is False

    program = tmp_path / "program.toml"
    program.write_text(RECIPE.format(out=tmp_path, teacher="program", teacher_lines=""))
    free = cli("estimate", program)
    assert free.code == 0 and "no API cost" in free.out
