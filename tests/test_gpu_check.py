"""The GPU check's dry run: the same script on the CPU with a tiny model (it checks the script, never the machine;
the real run needs a GPU and is never part of the tests)."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_report(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and set(report["training"]) == {"no_zero", "zero2"}
    for entry in report["training"].values():
        assert entry["steps"] == 3 and entry["useful_tokens_per_second"] > 0 and entry["mfu"] is None
    assert report["training"]["zero2"]["zero_stage"] == 2
    assert "evaluation" in report  # measured from a finished quickstart run, or skipped with the reason
