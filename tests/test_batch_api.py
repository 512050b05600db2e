"""The openai teacher through the Batch API, against a real HTTP server on 127.0.0.1 (tests/fake_openai.py) that
implements files and batches: results land in the same cache, a run killed mid-batch picks the same batch up
(never submits it twice), and a failed or expired batch falls back to asking the missing requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness_builtins.task_synthetic import Config as TaskConfig
from harness_builtins.task_synthetic import SyntheticArithmetic
from harness_builtins.teacher_openai import Config, OpenAITeacher

from .fake_openai import FakeOpenAI

TASK = SyntheticArithmetic(TaskConfig(train_size=10, validation_size=0, test_size=1))
EXAMPLES = TASK.load()["train"]


def teacher(server, tmp_path, **options) -> OpenAITeacher:
    settings = {"model": "m", "base_url": server.base_url, "api_key_env": "", "cache_dir": str(tmp_path / "cache"),
                "backoff_base": 0.01, "timeout": 5.0, "batch": True, "batch_poll_seconds": 0.05} | options
    return OpenAITeacher(Config(**settings))


def test_a_batch_run_gives_what_the_direct_run_gives_at_the_batch_price(tmp_path):
    options = {"samples": 2, "temperature": 0.7, "price_per_million_input": 2.0, "price_per_million_output": 8.0}
    with FakeOpenAI(batch_seconds=0.2) as server:
        ticks = []
        t = teacher(server, tmp_path / "a", **options)
        batched = t.generate(EXAMPLES, TASK, ticks.append)
        direct = teacher(server, tmp_path / "b", batch=False, **options).generate(EXAMPLES, TASK, lambda n: None)
        sent, submitted = server.requests, server.batches_created
        teacher(server, tmp_path / "a", **options).generate(EXAMPLES, TASK, lambda n: None)  # all in the cache now
        assert (server.requests, server.batches_created) == (sent, submitted)  # nothing sent, nothing submitted
    assert [[(g.rationale, g.answer_text) for g in gens] for gens in batched] == \
        [[(g.rationale, g.answer_text) for g in gens] for gens in direct]
    assert server.batches_created == 2  # rationales, then the answers they lead to
    u = t.usage()
    assert u.batched == 10 * 2 + 10 * 2 and u.batches == ["batch-1", "batch-2"] and u.failed == 0
    assert u.requests == 10 + 20  # batch lines: one n=2 line per question, one per answer
    assert u.cost == pytest.approx(0.5 * (u.input_tokens * 2.0 + u.output_tokens * 8.0) / 1e6)
    assert sum(ticks) == len(EXAMPLES)
    assert not list((tmp_path / "a" / "cache" / "batches").glob("*.json"))  # state removed once merged


@pytest.mark.parametrize("outcome", ["expired", "failed"])
def test_a_failed_or_expired_batch_falls_back_to_asking_directly(tmp_path, outcome):
    with FakeOpenAI(batch_seconds=0.05, batch_outcome=outcome) as server:
        t = teacher(server, tmp_path)
        out = t.generate(EXAMPLES, TASK, lambda n: None)
    assert all(g.answer_text == "42." for gens in out for g in gens)
    assert server.served["/v1/completions"] == 20 and t.usage().batched == 0


def test_lines_a_batch_left_out_are_asked_directly(tmp_path):
    with FakeOpenAI(batch_seconds=0.05, batch_missing=3) as server:
        out = teacher(server, tmp_path).generate(EXAMPLES, TASK, lambda n: None)
    assert all(g.answer_text == "42." for gens in out for g in gens)
    # 3 rationales left out of the first batch are asked directly with their 3 answers; the answer batch (for the
    # 7 rationales the first batch gave) leaves 3 out as well
    assert server.served["/v1/completions"] == 3 + 3 + 3 and server.batches_created == 2


def test_a_recipe_refuses_batch_with_a_server_it_starts(cli, tiny_recipe):
    result = cli("validate", tiny_recipe, "--no-load-checks", "--set", 'teacher.kind="openai"', "--set",
                 'teacher.model="m"', "--set", "teacher.batch=true", "--set",
                 'teacher.serve="vllm serve {model} --port {port}"')
    assert result.code == 2 and "teacher.batch" in result.err


RECIPE = """\
[run]
name = "batched"
output_dir = "{out}"

[task]
kind = "synthetic_arithmetic"
train_size = 40
validation_size = 0
test_size = 2

[teacher]
kind = "openai"
model = "m"
base_url = "{url}"
api_key_env = ""
batch = true
batch_poll_seconds = 0.1

[[strategy]]
kind = "fine_tune_cot"
filter = false

[[student]]
kind = "transformers"
tokenizer = "word"
architecture = {{ model_type = "gpt2", n_layer = 1, n_embd = 16, n_head = 2, n_positions = 256 }}

[training]
max_steps = 2

[evaluation]
max_gen_toks = 8

[[sink]]
kind = "local"
dir = "{out}/results"
"""


def test_kill_9_mid_batch_then_resume_picks_up_the_same_batch(tmp_path):
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    harness = [sys.executable, "-m", "harness.cli"]
    with FakeOpenAI(batch_seconds=4.0) as server:
        recipe = tmp_path / "batched.toml"
        recipe.write_text(RECIPE.format(out=tmp_path, url=server.base_url))
        proc = subprocess.Popen([*harness, "run", str(recipe)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        state_dir = tmp_path / "cache" / "batches"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = list(state_dir.glob("*.json")) if state_dir.exists() else []
            if states and "batch_id" in json.loads(states[0].read_text()):
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("the run never saved a batch id")
        os.killpg(proc.pid, signal.SIGKILL)  # mid-batch: submitted, not finished
        proc.wait()
        assert server.batches_created == 1
        saved = json.loads(states[0].read_text())
        done = subprocess.run([*harness, "run", str(recipe)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert server.batches_created == 2  # the same rationale batch picked up; one new batch: the answers
        assert server.served["/v1/completions"] == 0  # nothing asked directly, nothing paid twice
    usage = json.loads((tmp_path / "batched" / "teach" / "done.json").read_text())["record"]["usage"]
    assert usage["batches"] == [saved["batch_id"], "batch-2"] and usage["batched"] == 40 + 40


@pytest.mark.parametrize("path,status,error,message", [
    ("/v1/files", 401, "BadInputError", "refused the key (HTTP 401)"),
    ("/v1/batches", 404, "BadInputError", "answered 404: this server has no Batch API"),
    ("/v1/files", 413, "BadInputError", "answered 413: the batch file is too large"),
    ("/v1/batches", 500, "RunError", "answered HTTP 500; what it finished is kept"),
])
def test_a_batch_api_that_answers_with_an_error_is_a_message(tmp_path, path, status, error, message):
    with FakeOpenAI(batch_fault=(path, status)) as server:
        t = teacher(server, tmp_path, max_attempts=1)
        with pytest.raises(Exception) as raised:
            t.generate(EXAMPLES[:3], TASK, lambda n: None)
    assert type(raised.value).__name__ == error and message in str(raised.value)


def test_two_different_answers_to_one_request_are_neither_kept(tmp_path):
    with FakeOpenAI(batch_duplicates=2) as server:
        t = teacher(server, tmp_path, prompt="fine_tune_cot")  # one phase: the rationales and their answers
        out = t.generate(EXAMPLES[:4], TASK, lambda n: None)
        assert server.served["/v1/completions"] == 2  # the two doubled ones asked again directly
    assert all("(another answer)" not in g.rationale for gens in out for g in gens)
    assert any("2 requests have two different answers" in n for n in t.usage().notes)


def test_batch_answers_without_the_asked_top_k_are_billed_and_asked_again(tmp_path):
    """The fake's batches ignore logprobs: every batch answer lacks the top-k asked for. Those are counted on
    the bill, said, and asked again directly."""
    from .conftest import tiny_causal_lm

    tok = tiny_causal_lm(tmp_path / "tok", ["Rationale 0 for abc. --> 42"])
    with FakeOpenAI() as server:
        t = teacher(server, tmp_path, prompt="fine_tune_cot", top_logprobs=3, tokenizer=str(tok))
        out = t.generate(EXAMPLES[:3], TASK, lambda n: None)
        assert server.served["/v1/completions"] == 3
    u = t.usage()
    assert all(g.meta.get("signals") for gens in out for g in gens)
    assert u.batched == 0 and t._batch_tokens[1] > 0  # the batch's tokens are on the bill
    assert any("3 batch answers were not usable" in n for n in u.notes)


def test_a_kill_after_the_batch_finished_but_before_its_answers_were_cached_picks_it_up_again(tmp_path,
                                                                                            monkeypatch):
    from harness_builtins.teacher_openai import batch

    real = batch._merge
    with FakeOpenAI() as server:
        def killed(*args, **kwargs):
            raise KeyboardInterrupt  # as a kill -9 between the batch ending and its answers reaching the cache

        monkeypatch.setattr(batch, "_merge", killed)
        with pytest.raises(KeyboardInterrupt):
            teacher(server, tmp_path).generate(EXAMPLES[:3], TASK, lambda n: None)
        assert list((tmp_path / "cache" / "batches").glob("*.json"))  # the state is still there
        monkeypatch.setattr(batch, "_merge", real)
        again = teacher(server, tmp_path)
        again.generate(EXAMPLES[:3], TASK, lambda n: None)
        assert server.batches_created == 2  # the rationale batch picked up, never submitted twice; the answers'
        assert server.served["/v1/completions"] == 0
