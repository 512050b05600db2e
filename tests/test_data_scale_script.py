"""The scale benchmark runs as shipped (at a toy size here) and writes the figures it prints."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_data_scale_benchmark_writes_its_figures(tmp_path):
    out = tmp_path / "data_scale.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_scale.py"), "--sizes", "300", "--long", "0",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    run = report["runs"]["300"]
    assert run["exit_code"] == 0 and run["questions"] == 300 and run["rationales"] == 1200
    assert {"task", "teach", "filter", "build-diverse_reasoning", "train-diverse_reasoning"} <= set(run["stages"])
    assert all(s["peak_rss_mb"] and s["seconds"] is not None for s in run["stages"].values())
    assert run["stages"]["teach"]["bytes"] > run["stages"]["filter"]["bytes"] > 0
    assert "task+teach+filter+build" in done.stdout
