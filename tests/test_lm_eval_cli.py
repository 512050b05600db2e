"""The task files the harness writes also work with the stock lm_eval CLI, with the same outputs and scores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TINY


@pytest.mark.slow
def test_stock_lm_eval_cli_matches_the_harness(tmp_path):
    from harness.cli import main

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
                      .replace("max_steps = 40", "max_steps = 150")
                      + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    assert main(["run", str(recipe), "--set", "strategy.0.kind=fine_tune_cot", "--set", 'strategy.0.name="ftc"',
                 "--set", "strategy.1.format=natural"]) == 0
    run = tmp_path / "runs" / "tiny"
    for name in ("ftc", "fine_tune_cot"):
        metrics = json.loads((run / f"evaluate-{name}" / "metrics.json").read_text())
        out = tmp_path / f"cli-{name}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        subprocess.run(
            [str(Path(sys.executable).with_name("lm_eval")), "--model", "hf", "--model_args",
             f"pretrained={run / f'train-{name}' / 'model'},dtype=float32", "--tasks", metrics["task"],
             "--include_path", metrics["task_dir"], "--device", "cpu", "--batch_size", "4",
             "--output_path", str(out), "--log_samples"],
            check=True, env=env, capture_output=True, text=True, timeout=600)
        (cli_results,) = out.rglob("results_*.json")
        cli = json.loads(cli_results.read_text())["results"][metrics["task"]]
        assert cli["acc,none"] == metrics["acc"]
        assert cli["contains_answer,none"] == metrics["contains_answer"]
        assert cli["correct_format,none"] == metrics["correct_format"]
        (cli_samples,) = out.rglob("samples_*.jsonl")
        (ours,) = (run / f"evaluate-{name}" / "lm_eval").rglob("samples_*.jsonl")
        read = lambda p: [(s["doc_id"], s["resps"], s["acc"]) for s in map(json.loads, p.read_text().splitlines())]
        assert read(cli_samples) == read(ours)
