"""Evaluation on the device asked for, sampled evaluation (pass@1 over n samples, maj@n) that the stock lm_eval CLI
reproduces, the settings in the provenance, and `harness compare` refusing results evaluated differently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from .conftest import TINY


def _tiny_model():
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", vocab_size=50, n_layer=1, n_embd=16,
                                                                 n_head=2, n_positions=32))


def test_place_puts_the_model_on_the_device_and_dtype_asked_for():
    import torch

    from harness.models import place

    model = _tiny_model()
    assert place(model, "cpu", "bfloat16") == {"device": "cpu", "dtype": "bfloat16"}
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in model.parameters())
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert place(model, "auto", "float32")["device"] == expected
    assert next(model.parameters()).dtype == torch.float32


def test_auto_means_the_gpu_in_bfloat16_where_there_is_one(monkeypatch):
    import torch

    from harness.models import resolve_device, resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("float16", "cuda") == "float16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert resolve_dtype("auto", "cuda") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") in ("cpu", "mps")
    assert resolve_dtype("auto", "cpu") == "float32"


def test_a_gpu_asked_for_without_one_is_a_clear_error(monkeypatch):
    import torch

    from harness.errors import BadInputError
    from harness.models import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadInputError, match="no CUDA GPU"):
        resolve_device("cuda:1")


def test_lm_eval_runs_the_model_where_it_was_placed():
    """lm-eval's HFLM given an in-memory model uses the model's device, whatever device it is told: the harness
    places the model first and hands HFLM that device."""
    from transformers import PreTrainedTokenizerFast

    from harness._evaluation.lm_eval_run import hf_lm
    from harness.models import place
    from harness_builtins.student_transformers import train_word_tokenizer

    tok: PreTrainedTokenizerFast = train_word_tokenizer(["one two three four five"])
    model = _tiny_model()
    where = place(model, "cpu", "bfloat16")
    lm = hf_lm(model, tok, 4, 32)
    assert str(lm.device) == where["device"]
    assert next(lm.model.parameters()).dtype.__repr__() == "torch.bfloat16"


@pytest.mark.parametrize("settings, problem", [
    ({"samples": 4}, "evaluation.temperature"),
    ({"samples": 1, "temperature": 0.7}, "evaluation.samples"),
    ({"samples": 4, "temperature": 0.7, "backend": "vllm"}, "evaluation.backend"),
    ({"device": "gpu"}, "evaluation.device"),
    ({"dtype": "fp8"}, "evaluation.dtype"),
    ({"backend": "onnx"}, "evaluation.backend"),
])
def test_bad_evaluation_settings_are_refused_by_validate(cli, tiny_recipe, settings, problem):
    sets = [a for k, v in settings.items() for a in ("--set", f"evaluation.{k}={json.dumps(v)}")]
    result = cli("validate", tiny_recipe, *sets)
    assert result.code == 2
    assert problem in result.err


def test_majority_vote_keeps_the_most_common_cleansed_answer():
    from harness.answers import majority_filter_for, process_results_for

    vote = majority_filter_for("number", "", "-->")
    kept = list(vote([["so --> 4", "--> 5", "x --> 5.0", "nothing"], ["none", "here"]], None))
    assert kept == [["--> 5"], ["none"]]  # 5 and 5.0 vote together; no answer at all: the first output
    score = process_results_for("number", "", "-->")
    assert score({"answer": "5"}, [["--> 5", "--> 4", "--> 5", "--> 3"]])["acc"] == 0.5  # pass@1: the mean
    assert score({"answer": "5"}, ["--> 5"])["acc"] == 1.0  # greedy: one output


@pytest.mark.slow
def test_sampled_evaluation_reports_pass_at_1_and_maj_and_the_stock_cli_reproduces_it(tmp_path):
    from harness.answers import extract
    from harness.cli import main
    from harness.types import AnswerSpec

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
                      .replace("max_steps = 40", "max_steps = 120")
                      + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    n = 4
    assert main(["run", str(recipe), "--set", "strategy.0.kind=fine_tune_cot", "--set", 'strategy.0.name="ftc"',
                 "--set", "strategy.1.format=natural", "--set", f"evaluation.samples={n}",
                 "--set", "evaluation.temperature=1.0", "--set", "evaluation.batch_size=8"]) == 0
    run = tmp_path / "runs" / "tiny"
    metrics = json.loads((run / "evaluate-ftc" / "metrics.json").read_text())
    assert metrics["evaluation"] | {"backend": "hf", "dtype": "float32", "samples": n, "temperature": 1.0,
                                    "seed": 0} == metrics["evaluation"]

    # pass@1 and maj@n recomputed from lm-eval's own per-sample file
    (samples_file,) = (run / "evaluate-ftc" / "lm_eval").rglob("samples_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    per_filter = {f: [s for s in samples if s["filter"] == f] for f in ("pass@1", f"maj@{n}")}
    assert len(per_filter["pass@1"]) == len(per_filter[f"maj@{n}"]) == 12
    spec = AnswerSpec(kind="number")
    pass1, maj = [], []
    for s in per_filter["pass@1"]:
        (outputs,) = s["resps"]
        assert len(outputs) == n
        answers = [extract(o, spec, "-->") for o in outputs]
        gold = float(s["doc"]["answer"])
        pass1.append(sum(a is not None and abs(float(a) - gold) < 1e-6 for a in answers) / n)
        votes = Counter(a for a in answers if a is not None)
        maj.append(float(bool(votes) and abs(float(votes.most_common(1)[0][0]) - gold) < 1e-6))
    assert any(len(set(s["resps"][0])) > 1 for s in per_filter["pass@1"])  # sampled, not n copies
    assert metrics["acc"] == pytest.approx(sum(pass1) / len(pass1))
    assert metrics["maj"] == pytest.approx(sum(maj) / len(maj))

    # the leaderboard row says how it was evaluated
    from harness._results.rows import load

    (row,) = [r for r in load(tmp_path / "results") if r.run == "ftc"]
    assert row.evaluation_label == f"pass@1 of {n}, T=1 · hf · float32"
    assert row.maj == pytest.approx(metrics["maj"])

    # the stock CLI, from another directory, on the written task with the same batch size and seed
    out = tmp_path / "cli"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    results_file = next((run / "evaluate-ftc" / "lm_eval").rglob("results_*.json"))
    model_args = json.loads(results_file.read_text())["config"]["model_args"]
    assert Path(model_args["pretrained"]).is_dir()  # a loadable model folder, not a label
    subprocess.run(
        [str(Path(sys.executable).with_name("lm_eval")), "--model", "hf", "--model_args",
         f"pretrained={model_args['pretrained']},dtype=float32", "--tasks", metrics["task"],
         "--include_path", metrics["task_dir"], "--device", "cpu", "--batch_size", "8", "--seed", "0",
         "--output_path", str(out), "--log_samples"],
        check=True, env=env, capture_output=True, text=True, timeout=600, cwd="/")
    cli = json.loads(next(out.rglob("results_*.json")).read_text())["results"][metrics["task"]]
    assert cli["acc,pass@1"] == pytest.approx(metrics["acc"])
    assert cli[f"acc,maj@{n}"] == pytest.approx(metrics["maj"])


def _result(folder: Path, evaluation: dict | None, acc: float = 0.5) -> Path:
    folder.mkdir(parents=True)
    path = folder / "results_2026-01-01T00-00-00.json"
    block = {"run_name": "ftc", "recipe": "r", "training": {"seed": 0}}
    if evaluation is not None:
        block["evaluation"] = evaluation
    path.write_text(json.dumps({"results": {"t": {"acc,none": acc, "acc_stderr,none": 0.01}},
                                "n-samples": {"t": {"effective": 300}}, "harness": block}))
    return path


def test_compare_refuses_results_evaluated_with_different_settings(cli, tmp_path):
    _result(tmp_path / "base", None)  # written before the settings were recorded: greedy, hf, float32
    _result(tmp_path / "same", {"samples": 1, "temperature": 0.0, "backend": "hf", "dtype": "float32"})
    _result(tmp_path / "other", {"samples": 8, "temperature": 0.7, "backend": "hf", "dtype": "bfloat16"})
    assert cli("compare", tmp_path / "base", tmp_path / "same").code == 0
    refused = cli("compare", tmp_path / "base", tmp_path / "other")
    assert refused.code == 2
    assert "samples 1 -> 8" in refused.err and "dtype 'float32' -> 'bfloat16'" in refused.err
    assert "--allow-different-settings" in refused.err
    assert cli("compare", tmp_path / "base", tmp_path / "other", "--allow-different-settings").code == 0


def test_a_serve_command_with_a_key_is_refused_without_echoing_it(cli, tiny_recipe):
    command = "vllm serve {model} --host 127.0.0.1 --port {port} --api-key sk-verysecret123"
    result = cli("validate", tiny_recipe, "--no-load-checks", "--set", 'evaluation.backend="vllm"', "--set",
                 f"evaluation.serve={json.dumps(command)}")
    assert result.code == 2 and "evaluation.serve" in result.err and "--api-key" in result.err
    assert "sk-verysecret123" not in result.err + result.out


def test_a_new_backend_is_one_class(cli, tiny_recipe, monkeypatch):
    """An evaluation backend owns its recipe rules and its checks: registering one class is all it takes for the
    recipe to accept its name and for validate to report its problems under evaluation.*."""
    from harness._evaluation import backends

    class Remote(backends.Backend):
        name = "remote"

        def recipe_problems(self, ev):
            return [("batch_size", "the remote backend takes batches of 8 at most")] if ev.batch_size > 8 else []

        def preflight(self, ev):
            return [("serve", "no remote endpoint is configured")]

    monkeypatch.setitem(backends.BACKENDS, "remote", Remote())
    refused = cli("validate", tiny_recipe, "--set", 'evaluation.backend="remote"', "--set", "evaluation.batch_size=64")
    assert refused.code == 2 and "evaluation.batch_size: the remote backend takes batches of 8 at most" in refused.err
    checked = cli("validate", tiny_recipe, "--set", 'evaluation.backend="remote"', "--set", "evaluation.batch_size=8")
    assert checked.code == 2 and "evaluation.serve: no remote endpoint is configured" in checked.err
    assert cli("validate", tiny_recipe, "--set", 'evaluation.backend="remote"', "--set", "evaluation.batch_size=8",
               "--no-load-checks").code == 0


def test_served_evaluation_counts_the_answers_as_they_arrive(tmp_path):
    """The evaluate stage's bar on the vllm backend: lm-eval's completions model over a served student reports
    each request's answers as they arrive (here the fake OpenAI-compatible server stands in for vLLM)."""
    from lm_eval.api.instance import Instance

    from harness._evaluation.lm_eval_run import served_lm
    from harness.serve import managed_server

    from .conftest import REPO, tiny_causal_lm

    model = tiny_causal_lm(tmp_path / "student", ["one two three plus four five"], positions=64)
    seen: list[int] = []
    command = f"{sys.executable} {REPO / 'tests' / 'fake_openai.py'} --port {{port}} --model {{model}}"
    with managed_server(command, str(model), tmp_path / "serve.log", 60) as url:
        lm = served_lm(seen.append, base_url=f"{url}/completions", model=str(model), tokenizer=str(model),
                       tokenizer_backend="huggingface", num_concurrent=4, max_gen_toks=4, max_length=64, seed=0)
        requests = [Instance("generate_until", {}, (f"one two {i}", {"until": ["\n"], "max_gen_toks": 4}), i)
                    for i in range(10)]
        answers = lm.generate_until(requests)
    assert len(answers) == 10 and sum(seen) == 10 and len(seen) >= 3
