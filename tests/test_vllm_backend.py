"""evaluation.backend = "vllm": the trained student served by vLLM (started and stopped by the harness on
127.0.0.1, from a command that can live in another virtualenv) and evaluated by lm-eval through its
OpenAI-compatible completions model; a multi-call strategy's loop (Socratic CoT) runs against the server too. The
greedy predictions are compared with the hf backend's."""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import TINY
from .test_distillation import _vllm_python


def _samples(folder):
    (path,) = folder.rglob("samples_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_vllm_backend_gives_the_hf_backends_predictions(tmp_path, monkeypatch):
    from harness.cli import main

    python = _vllm_python()
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    command = (f"{python} -m vllm.entrypoints.openai.api_server --model {{model}} --host 127.0.0.1 --port {{port}} "
               "--max-model-len 128 --dtype float32 --enforce-eager")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(  # vLLM's CPU attention needs heads of width 32 or more: 2 heads of 32
        TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
        .replace("n_embd = 32", "n_embd = 64").replace("max_steps = 40", "max_steps = 400")
        .replace('[[strategy]]\nkind = "vanilla"\n', '[[strategy]]\nkind = "socratic"\nmode = "unified"\n'
                                                     'packed = true\nmax_new_tokens = 24\n')
        + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    run = tmp_path / "runs" / "tiny"
    assert main(["run", str(recipe)]) == 0
    hf = {name: _samples(run / f"evaluate-{name}" / "lm_eval") for name in ("socratic", "fine_tune_cot")}
    hf_metrics = {name: json.loads((run / f"evaluate-{name}" / "metrics.json").read_text()) for name in hf}
    shutil.rmtree(tmp_path / "results", ignore_errors=True)

    assert main(["run", str(recipe), "--set", 'evaluation.backend="vllm"', "--set",
                 f"evaluation.serve={json.dumps(command)}"]) == 0
    differ = {}
    for name in hf:
        metrics = json.loads((run / f"evaluate-{name}" / "metrics.json").read_text())
        made = metrics["evaluation"]
        assert made["backend"] == "vllm" and made["engine_version"] == "0.32.0"
        assert (run / f"evaluate-{name}" / "serve.log").read_text()  # the server's log is kept with the stage
        served = _samples(run / f"evaluate-{name}" / "lm_eval")
        differ[name] = [(a["doc_id"], a["resps"], b["resps"]) for a, b in zip(hf[name], served)
                        if a["resps"] != b["resps"]]
        print(name, len(differ[name]), "of", len(served), "differ", hf_metrics[name]["acc"], metrics["acc"])
    assert not differ["fine_tune_cot"] and not differ["socratic"], differ
