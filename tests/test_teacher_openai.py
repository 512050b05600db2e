"""The openai teacher against a real HTTP server on 127.0.0.1 (tests/fake_openai.py), faults included."""

import time

import pytest

from harness.errors import BadInputError
from harness.records import GENERATIONS, RecordTable
from harness_builtins.task_synthetic import Config as TaskConfig
from harness_builtins.task_synthetic import SyntheticArithmetic
from harness_builtins.teacher_openai import Config, OpenAITeacher

from .fake_openai import FakeOpenAI

TASK = SyntheticArithmetic(TaskConfig(train_size=12, validation_size=0, test_size=1))
EXAMPLES = TASK.load()["train"]


def teacher(server, tmp_path, **options) -> OpenAITeacher:
    settings = {"model": "m", "base_url": server.base_url, "api_key_env": "", "cache_dir": str(tmp_path),
                "backoff_base": 0.01, "timeout": 2.0} | options
    return OpenAITeacher(Config(**settings))


def test_zero_shot_cot_two_stages_exact_prompts(tmp_path):
    with FakeOpenAI() as server:
        ticks = []
        out = teacher(server, tmp_path).generate(EXAMPLES[:2], TASK, ticks.append)
    q = EXAMPLES[0].question
    stage1 = f"Q: {q}\nA: Let's think step by step."
    assert server.prompts.count(stage1) == 1
    rationale = FakeOpenAI.complete(stage1, 0)
    assert f"{stage1}{rationale}\nTherefore, the answer (arabic numerals) is" in server.prompts
    g = out[0][0]
    assert (g.rationale, g.answer_text, g.sample_index) == (rationale.strip(), "42.", 0)
    assert len(ticks) == 2 and server.served["/v1/completions"] == 4


def test_chat_endpoint_and_usage(tmp_path):
    with FakeOpenAI() as server:
        t = teacher(server, tmp_path, endpoint="chat", price_per_million_input=1.0, price_per_million_output=2.0)
        out = t.generate(EXAMPLES[:3], TASK, lambda n: None)
    assert server.served["/v1/chat/completions"] == 6 and all(g.answer_text == "42." for (g,) in out)
    stats = t.usage()
    assert stats.requests == 6 and stats.input_tokens > 0 and stats.cost == pytest.approx(
        (stats.input_tokens * 1.0 + stats.output_tokens * 2.0) / 1e6)


def test_diverse_samples_via_n_and_fallback_when_the_server_ignores_n(tmp_path):
    with FakeOpenAI() as server:
        out = teacher(server, tmp_path / "a", samples=4, temperature=0.7).generate(EXAMPLES[:2], TASK, lambda n: 0)
    assert [g.sample_index for g in out[0]] == [0, 1, 2, 3]
    assert len({g.rationale for g in out[0]}) == 4
    assert server.requests == 2 + 8  # one n=4 request per question, then 8 answer requests
    with FakeOpenAI(max_n=1) as capped:
        out2 = teacher(capped, tmp_path / "b", samples=4, temperature=0.7).generate(EXAMPLES[:2], TASK, lambda n: 0)
    assert [len(g) for g in out2] == [4, 4]
    # n=4 answered with 1 choice: 3 separate requests each. That server gives the same rationale to every
    # separate request, so the 4 answer prompts of a question are identical: sent once, not 4 times at once.
    assert capped.requests == 2 * (1 + 3) + 2


def test_every_fault_is_retried_and_nothing_is_lost(tmp_path):
    faults = {1: "429", 2: "500", 3: "truncated", 4: "drop", 5: "timeout", 9: "429", 10: "500"}
    with FakeOpenAI(faults=faults, hang=2.5) as server:
        t = teacher(server, tmp_path, timeout=1.0)
        out = t.generate(EXAMPLES, TASK, lambda n: None)
    assert all(g.answer_text == "42." and not g.meta for (g,) in out)
    assert t.usage().retries == len(faults) and t.usage().failed == 0
    # every prompt answered; the timed-out request is answered again (the server finished it after the client left)
    assert len(set(server.prompts)) == 2 * len(EXAMPLES) and len(server.prompts) == 2 * len(EXAMPLES) + 1


def test_retry_after_is_honoured(tmp_path):
    with FakeOpenAI(faults={1: "429"}, retry_after=0.6) as server:
        started = time.perf_counter()
        teacher(server, tmp_path, backoff_base=0.001, concurrency=1).generate(EXAMPLES[:1], TASK, lambda n: None)
        assert time.perf_counter() - started >= 0.6
    assert server.requests == 3


def test_requests_that_keep_failing_are_recorded_then_retried_next_run(tmp_path):
    with FakeOpenAI(poison=EXAMPLES[0].question) as server:
        t = teacher(server, tmp_path, max_attempts=3)
        out = t.generate(EXAMPLES[:2], TASK, lambda n: None)
        assert out[0][0].rationale == "" and "gave up after 3 attempts: InternalServerError" in out[0][0].meta["error"]
        assert out[1][0].answer_text == "42." and t.usage().failed == 1 and server.requests == 3 + 2
        server.poison = None
        again = teacher(server, tmp_path).generate(EXAMPLES[:2], TASK, lambda n: None)
        assert server.requests == 5 + 2  # only the failed question is asked again
    assert again[0][0].answer_text == "42." and again[1] == out[1]


def test_cached_rerun_makes_no_requests(tmp_path):
    with FakeOpenAI() as server:
        first = teacher(server, tmp_path, samples=2, temperature=0.7).generate(EXAMPLES, TASK, lambda n: None)
        before = server.requests
        t = teacher(server, tmp_path, samples=2, temperature=0.7)
        second = t.generate(EXAMPLES, TASK, lambda n: None)
        assert server.requests == before and second == first and t.usage().cached == 4 * len(EXAMPLES)
        teacher(server, tmp_path, samples=2, temperature=0.5).generate(EXAMPLES[:1], TASK, lambda n: 0)
        # another temperature is other content: stage 1 is asked anew; the stage-2 prompts came out identical
        # (this server's text ignores temperature), so those come from the cache
        assert server.requests == before + 1


def test_bad_key_stops_at_once_and_never_shows_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY_VAR", "sk-very-secret-123")
    with FakeOpenAI(api_key="sk-right") as server:
        with pytest.raises(BadInputError) as info:
            teacher(server, tmp_path, api_key_env="SECRET_KEY_VAR").generate(EXAMPLES, TASK, lambda n: None)
    assert str(info.value).startswith("teacher: AuthenticationError from http://127.0.0.1:")
    assert "Incorrect API key provided." in str(info.value) and "sk-very-secret-123" not in str(info.value)
    assert server.requests <= 32  # stopped at once: no retries of the 401s
    assert not any("sk-very-secret" in p.read_text() for p in tmp_path.rglob("*") if p.is_file())


def test_unknown_model_and_missing_key_variable(tmp_path, monkeypatch):
    with FakeOpenAI(models=("real",)) as server:
        with pytest.raises(BadInputError, match=r"NotFoundError .*\(model m\): The model `m` does not exist."):
            teacher(server, tmp_path).generate(EXAMPLES[:1], TASK, lambda n: None)
        monkeypatch.delenv("NOPE_KEY", raising=False)
        with pytest.raises(BadInputError, match="teacher.api_key_env: the environment variable NOPE_KEY is not set"):
            teacher(server, tmp_path, api_key_env="NOPE_KEY").generate(EXAMPLES[:1], TASK, lambda n: None)


KILL_RECIPE = """\
[run]
name = "killed"
output_dir = "{out}"

[task]
kind = "synthetic_arithmetic"
train_size = 240
validation_size = 0
test_size = 4

[teacher]
kind = "openai"
model = "m"
base_url = "{url}"
api_key_env = ""
concurrency = 4

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


def test_kill_9_mid_teach_then_resume_loses_only_requests_in_flight(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    with FakeOpenAI(latency=0.03) as server:
        recipe = tmp_path / "killed.toml"
        recipe.write_text(KILL_RECIPE.format(out=tmp_path, url=server.base_url))
        cmd = [sys.executable, "-m", "harness.cli", "run", str(recipe)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        cache_files = []
        while time.time() < deadline and proc.poll() is None:
            cache_files = list((tmp_path / "cache").rglob("*.jsonl"))
            if cache_files and cache_files[0].read_bytes().count(b"\n") >= 150:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        (cache_file,) = cache_files
        lines = cache_file.read_bytes().split(b"\n")
        complete = [json.loads(line) for line in lines[:-1]]
        keys = [r["key"] for r in complete]
        assert len(keys) == len(set(keys)) >= 150  # no duplicates, nothing before the kill lost
        served_before = len(server.prompts)
        assert served_before - len(keys) <= 4 + 1  # at most the requests in flight (+ a torn line) are lost
        assert not (tmp_path / "killed" / "teach").exists()  # the stage did not finish

        requests_before = server.requests
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert server.requests - requests_before == 480 - len(keys)  # exactly the work not yet cached
        assert len(set(server.prompts)) == 480
    final = [json.loads(line)["key"] for line in cache_file.read_text().splitlines()]
    assert len(final) == len(set(final)) == 480
    teach = tmp_path / "killed" / "teach"
    rows = RecordTable(teach / "generations.arrow", GENERATIONS)
    assert len({g.example_id for g in rows}) == 240 and all(g.answer_text == "42." for g in rows)
    record = json.loads((teach / "done.json").read_text())["record"]
    assert record["usage"]["requests"] == 480 - len(keys) and record["usage"]["cached"] == len(keys)


@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory):
    """`transformers serve` on 127.0.0.1 with a tiny local model (random weights, word-level tokenizer)."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from .conftest import tiny_causal_lm

    model_dir = tiny_causal_lm(tmp_path_factory.mktemp("served") / "tiny", [e.question for e in EXAMPLES])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(model_dir.parent / "hub")}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("transformers")), "serve", str(model_dir), "--host",
                             "127.0.0.1", "--port", str(port), "--device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("transformers serve did not become healthy")
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_transformers_serve(transformers_server, tmp_path, endpoint):
    base_url, model = transformers_server
    config = dict(model=model, base_url=base_url, api_key_env="", endpoint=endpoint, samples=2, temperature=0.7,
                  max_tokens=12, answer_max_tokens=4, cache_dir=str(tmp_path), concurrency=2)
    t = OpenAITeacher(Config(**config))
    out = t.generate(EXAMPLES[:3], TASK, lambda n: None)
    assert [[g.sample_index for g in gens] for gens in out] == [[0, 1]] * 3
    assert all(isinstance(g.rationale, str) and not g.meta for gens in out for g in gens)
    # the server ignores n: one n=2 request per question returns one choice, the second sample is asked
    # separately, then one answer request per distinct answer prompt (it samples greedily: identical rationales
    # give identical answer prompts, sent once)
    u = t.usage()
    assert u.requests + u.deduplicated == 3 * (2 + 2) and u.input_tokens > 0
    again = OpenAITeacher(Config(**config))
    assert again.generate(EXAMPLES[:3], TASK, lambda n: None) == out and again.usage().requests == 0
    again.close()


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_top_logprobs_come_with_the_text_in_one_cache_entry(tmp_path, endpoint):
    """teacher.top_logprobs: each generated token's top-k (as ids; vLLM's token_id:N form asked for), the EOS the
    server stopped on appended, kept in the same cache entry as the text and replayed without a request."""
    from .conftest import tiny_causal_lm

    tok_dir = tiny_causal_lm(tmp_path / "tok", ["Rationale 0 for abc. --> 42"])
    with FakeOpenAI() as server:
        options = dict(prompt="fine_tune_cot", top_logprobs=3, samples=2, temperature=0.7, endpoint=endpoint,
                       tokenizer=str(tok_dir))
        t = teacher(server, tmp_path, **options)
        out = t.generate(EXAMPLES[:3], TASK, lambda n: None)
        for gens in out:
            for g in gens:
                s = g.meta["signals"]
                words = len(f" Rationale {g.sample_index} for x.".split())
                assert len(s["target_ids"]) == len(s["topk_ids"]) == len(s["topk_logprobs"]) == words + 1
                assert s["target_ids"][-1] == s["topk_ids"][-1][0] and s["topk_logprobs"][-1] == [0.0]  # EOS
                assert all(len(top) == 3 for top in s["topk_ids"][:-1]) and s["topk_logprobs"][0][0] == -0.1
        before = server.requests
        again = teacher(server, tmp_path, **options)
        assert again.generate(EXAMPLES[:3], TASK, lambda n: None) == out and server.requests == before


@pytest.mark.parametrize("kind", ["nan", "inf", "oov"])
def test_non_finite_or_out_of_vocabulary_top_k_is_refused_at_teach_time_and_never_paid_twice(tmp_path, kind):
    """A server answering NaN or +inf log-probabilities, or a token id outside the vocabulary, for one question:
    the teach stage stops (exit 2) naming the question and its cache entry; every other answer is cached, and
    the re-run pays for nothing twice and stops the same way."""
    from harness.errors import BadInputError

    from .conftest import tiny_causal_lm

    tok_dir = tiny_causal_lm(tmp_path / "tok", ["Rationale 0 for abc. --> 42"])
    with FakeOpenAI(signal_fault=(EXAMPLES[1].question, kind)) as server:
        options = dict(prompt="fine_tune_cot", top_logprobs=3, tokenizer=str(tok_dir), endpoint="chat")
        t = teacher(server, tmp_path, **options)
        with pytest.raises(BadInputError, match=rf"unusable top-k signals for 1 requests: question {EXAMPLES[1].id} "
                                                r"sample 0 \(cache entry [0-9a-f]{16}\.\.\.\): topk_"):
            t.generate(EXAMPLES[:4], TASK, lambda n: None)
        paid = server.requests
        assert paid == 4  # one request per question, the broken one included: all cached
        again = teacher(server, tmp_path, **options)
        with pytest.raises(BadInputError, match="a re-run pays for nothing twice"):
            again.generate(EXAMPLES[:4], TASK, lambda n: None)
        assert server.requests == paid


def test_a_minus_inf_log_probability_is_a_probability_of_zero_not_an_error(tmp_path):
    from .conftest import tiny_causal_lm

    tok_dir = tiny_causal_lm(tmp_path / "tok", ["Rationale 0 for abc. --> 42"])
    with FakeOpenAI(signal_fault=(EXAMPLES[0].question, "-inf")) as server:
        t = teacher(server, tmp_path, prompt="fine_tune_cot", top_logprobs=3, tokenizer=str(tok_dir))
        out = t.generate(EXAMPLES[:2], TASK, lambda n: None)
    assert float("-inf") in out[0][0].meta["signals"]["topk_logprobs"][0]


def test_a_server_without_logprobs_is_a_clear_error_not_silent_zeros(tmp_path):
    from harness.errors import BadInputError

    from .conftest import tiny_causal_lm

    tok_dir = tiny_causal_lm(tmp_path / "tok", ["x"])
    with FakeOpenAI(logprobs=False) as server:
        t = teacher(server, tmp_path, prompt="fine_tune_cot", top_logprobs=3, tokenizer=str(tok_dir))
        with pytest.raises(BadInputError, match="returned no top log-probabilities; the server must support"):
            t.generate(EXAMPLES[:2], TASK, lambda n: None)


def test_a_server_the_teacher_starts_and_always_stops(tmp_path):
    """teacher.serve: the command is started on a free port, waited for, used by every chunk of the teach stage
    (one server, not one per generate call), and stopped by close; the cache keys name the model, not the port,
    so a second run (another port) asks nothing again."""
    import socket
    import sys

    from .conftest import REPO

    command = (f"{sys.executable} {REPO / 'tests' / 'fake_openai.py'} --port {{port}} --model {{model}} "
               """--generation-config '{"temperature": 0}'""")  # braces of the command's own are left alone
    options = dict(model="local-model", base_url="http://unused.invalid/v1", api_key_env="OPENAI_API_KEY",
                   cache_dir=str(tmp_path), serve=command)
    t = OpenAITeacher(Config(**options))
    out = t.generate(EXAMPLES[:2], TASK, lambda n: None)
    log = next((tmp_path / "serve").glob("*.log")).read_text()
    port = int(log.split("127.0.0.1:")[1].split("/")[0])
    with socket.socket() as s:  # kept for the next chunk
        assert s.connect_ex(("127.0.0.1", port)) == 0
    out += t.generate(EXAMPLES[2:3], TASK, lambda n: None)
    assert [g.answer_text for (g,) in out] == ["42."] * 3 and t.usage().requests == 6
    assert len(list((tmp_path / "serve").glob("*.log"))) == 1 and next((tmp_path / "serve").glob("*.log")).read_text(
    ).count("listening on") == 1  # one server for both calls
    t.close()
    with socket.socket() as s:  # stopped: nothing listens on its port any more
        assert s.connect_ex(("127.0.0.1", port)) != 0
    again = OpenAITeacher(Config(**options))
    assert again.generate(EXAMPLES[:3], TASK, lambda n: None) == out and again.usage().requests == 0
    again.close()
    assert Config(**{**options, "serve": "nonexistent-program {model}"}).check() == [
        ("serve", "the command must contain {port} (the harness fills it in)"),
        ("serve", "'nonexistent-program' is not an executable file or a program on PATH")]


def test_several_servers_share_the_work_and_one_that_dies_is_left(tmp_path):
    """Two local servers of the same model, the second killed mid-run: every question is answered, each
    completion cached once, the retries of the dead server's requests go to the live one, and the usage names
    the server that stopped."""
    import json
    import threading

    examples = SyntheticArithmetic(TaskConfig(train_size=60, validation_size=0, test_size=1)).load()["train"]
    with FakeOpenAI(latency=0.03) as a, FakeOpenAI(latency=0.03) as b:
        def kill_b() -> None:
            while b.requests < 10:
                time.sleep(0.005)
            b.stop()

        killer = threading.Thread(target=kill_b)
        killer.start()
        t = teacher(a, tmp_path, concurrency=4, endpoints=[{"base_url": b.base_url, "concurrency": 4}],
                    max_attempts=8)
        out = t.generate(list(examples), TASK, lambda n: None)
        killer.join(10)
        answered = len(a.prompts) + len(b.prompts)
    assert all(not g.meta.get("error") and g.answer_text == "42." for (g,) in out)
    assert len(b.prompts) >= 5 and len(a.prompts) > len(b.prompts)  # both took work; a took over the rest
    assert answered - 120 <= 4  # at most what was in flight at b when it died was answered twice
    usage = t.usage()
    (dead,) = [e for e in usage.endpoints if e["dead"]]
    assert dead["base_url"] == b.base_url and not [e for e in usage.endpoints if e["base_url"] == a.base_url][0]["dead"]
    keys = [json.loads(line)["key"] for f in (tmp_path / "teacher").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 120  # 60 rationales + 60 answers, each cached once


def test_endpoints_are_checked_in_the_recipe():
    bad = Config(model="m", endpoints=[{"url": "x"}, {"base_url": "http://h/v1", "concurrency": 0},
                                       {"base_url": "http://u:p@h/v1"}]).check()
    assert ("endpoints[0]", "needs base_url, e.g. { base_url = \"http://gpu2:8000/v1\", concurrency = 32 }") in bad
    assert ("endpoints[1].concurrency", "must be a whole number of at least 1") in bad
    assert any(k == "endpoints[2].base_url" for k, _ in bad)


def test_sigterm_to_harness_run_stops_the_server_it_started(tmp_path):
    """A scheduler's cancel (SIGTERM) unwinds like Ctrl-C: the managed server is stopped, the run says so."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from harness.testing import tiny_recipe

    from .conftest import REPO

    serve = f"{sys.executable} {REPO / 'tests' / 'fake_openai.py'} --port {{port}} --model {{model}} --latency 3"
    recipe = tiny_recipe(tmp_path, path=tmp_path / "r.toml", overrides=[
        f'teacher={{ kind = "openai", model = "m", base_url = "http://unused.invalid/v1", api_key_env = "", '
        f'cache_dir = "{tmp_path / "cache"}", serve = "{serve}" }}'])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(recipe)], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    port = None
    while port is None and time.monotonic() < deadline:  # wait until the server answers
        logs = list((tmp_path / "cache" / "serve").glob("*.log")) if (tmp_path / "cache" / "serve").is_dir() else []
        text = logs[0].read_text() if logs else ""
        if "listening on" in text:
            port = int(text.split("127.0.0.1:")[1].split("/")[0])
        time.sleep(0.2)
    assert port is not None, run.communicate(timeout=10)
    time.sleep(1.0)  # requests in flight
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 143, err
    assert "terminated; finished stages are kept" in err and "Traceback" not in err
    with socket.socket() as s:  # nothing listens there any more: the server was stopped
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_the_served_model_s_readiness_wait_is_set_in_the_recipe(tmp_path):
    import sys
    import time

    from harness.errors import RunError

    silent = f"{sys.executable} -c 'import time, sys; time.sleep(60)' {{model}} {{port}}"  # never answers
    t = OpenAITeacher(Config(model="m", base_url="http://unused.invalid/v1", api_key_env="",
                             cache_dir=str(tmp_path), serve=silent, serve_timeout=1.5))
    started = time.monotonic()
    with pytest.raises(RunError, match=r"did not answer within 2 s \(a model that loads for longer: raise "
                                       r"teacher.serve_timeout"):
        t.generate(EXAMPLES[:1], TASK, lambda n: None)
    t.close()
    assert time.monotonic() - started < 30
    assert Config(model="m", serve_timeout=0).check()[-1] == ("serve_timeout", "must be positive (seconds)")
