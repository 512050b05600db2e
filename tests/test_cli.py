"""The CLI: exact messages and exit codes."""

import json

import pytest

from .conftest import TINY


def test_validate_ok(cli, tiny_recipe):
    result = cli("validate", tiny_recipe)
    assert result.code == 0
    assert result.out == (f"{tiny_recipe}: ok (synthetic_arithmetic task, program teacher, 2 strategies, "
                          "1 student: 2 training runs)\n")


def test_validate_bad_recipe_lists_every_problem_and_exits_2(cli, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace('kind = "program"', 'kind = "opena"').replace("batch_size = 16", "batch_size = 0"))
    result = cli("validate", path)
    assert result.code == 2
    assert result.err == (
        f"error: {path}: training.batch_size: must be at least 1\n"
        f"error: {path}: teacher.kind: unknown teacher 'opena'. Did you mean 'openai'? Available: gold, hf, openai, program, "
        "zero_shot_cot_log\n"
        "2 problems found\n")
    assert result.out == ""


def test_missing_recipe_exits_2(cli, tmp_path):
    result = cli("validate", tmp_path / "nope.toml")
    assert (result.code, result.err) == (2, f"error: {tmp_path / 'nope.toml'}: no such recipe file\n1 problem found\n")


def test_bad_override_exits_2(cli, tiny_recipe):
    result = cli("validate", tiny_recipe, "--set", "training.max_steps=-1")
    assert result.code == 2
    assert result.err == f"error: {tiny_recipe}: training.max_steps: must be at least 1\n1 problem found\n"


def test_run_with_unknown_from_stage_exits_2(cli, tiny_recipe):
    result = cli("run", tiny_recipe, "--from", "trian")
    assert result.code == 2
    assert result.err.endswith("error: --from: unknown stage 'trian'; stages: task, teach, filter, build, train, "
                               "evaluate, publish\n")


def test_usage_error_exits_2(cli):
    assert cli("frobnicate").code == 2
    assert cli("--version").code == 0


def test_plugins_json_lists_kind_name_plugin_distribution_version(cli):
    result = cli("plugins", "--json")
    assert result.code == 0
    rows = json.loads(result.out)["components"]
    assert {"kind": "teacher", "name": "program", "plugin": "program_teacher", "distribution": "harness",
            "version": "0.1.0", "note": ""} in rows
    assert {r["kind"] for r in rows} == {"task", "teacher", "student", "strategy", "sink"}


@pytest.mark.slow
def test_a_first_run_shows_the_harness_output_only(tmp_path):
    """Outside a git checkout, progress bars not turned off by the caller, sampled evaluation on: no third-party
    noise (lm-eval's git complaint and notes, transformers' warnings, tqdm bars) reaches the terminal."""
    import os
    import re
    import subprocess
    import sys

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY + "samples = 2\ntemperature = 1.0\n")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(recipe)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    noise = [line for line in output.splitlines()
             if re.search(r"fatal:|\[transformers\]|warn|lm.eval|it/s\]|kwarg|not sharded|deprecat", line, re.I)]
    assert not noise, noise
    assert "✓ evaluate fine_tune_cot" in output and "pass@1" in output


def test_harness_tasks_exits_1_when_a_task_plugin_fails(cli):
    import harness
    from harness.testing import plugin_registered

    class Broken(harness.Task):
        def __init__(self, config=None):
            self.config = config

        def load(self):
            raise RuntimeError("a bug in the plugin")

    class Plugin:
        @harness.hookimpl
        def register_tasks(self, register):
            register("broken_task", Broken)

    with plugin_registered(Plugin()):
        result = cli("tasks")
        listed = cli("tasks", "--json")
    assert result.code == 1 and "1 task plugin failed to load (broken_task)" in result.err
    rows = {r["task"]: r for r in json.loads(listed.out)}
    assert listed.code == 1 and rows["broken_task"]["source"].endswith("RuntimeError in the task plugin: a bug in "
                                                                       "the plugin")


def test_http_failures_anywhere_are_one_line_naming_the_endpoint():
    import asyncio

    import openai

    from harness.cli import http_failure

    async def ask(url):
        client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=2)
        try:
            await client.completions.create(model="m", prompt="x")
        except Exception as exc:  # noqa: BLE001 - the error the client raises is what is tested
            return exc

    with FakeOpenAI(fault_rate=1.0, fault_kinds=("500",)) as server:
        status = asyncio.run(ask(server.base_url))
    assert http_failure(status).startswith(f"{server.base_url}/completions answered HTTP 500")
    refused = asyncio.run(ask("http://127.0.0.1:9/v1"))
    assert http_failure(refused).startswith("cannot reach http://127.0.0.1:9/v1/completions (APIConnectionError")
    assert http_failure(ValueError("a bug")) is None


from .fake_openai import FakeOpenAI  # noqa: E402
