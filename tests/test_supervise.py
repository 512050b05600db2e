"""A run the kernel kills (signal 9: out of memory) still ends with a message: the stage, the memory reached and
the knob to turn; finished stages are kept and the same command resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import TINY


@pytest.mark.skipif(sys.platform != "linux", reason="the watch reads /proc")
def test_a_kernel_kill_in_training_is_explained_and_the_run_resumes(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
                      .replace("max_steps = 40", "max_steps = 4000")
                      + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    harness = Path(sys.executable).parent / "harness"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([str(harness), "run", str(recipe)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stage_file = tmp_path / f"harness-stage-{proc.pid}.json"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for the first training stage, then do what the kernel's OOM killer does
        status = json.loads(stage_file.read_text()) if stage_file.exists() else {}
        if status.get("stage", "").startswith("train-"):
            time.sleep(2)
            os.kill(status["pid"], signal.SIGKILL)
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the run never reached a training stage")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"killed by the kernel, most likely out of memory in the {status['stage']} stage" in err
    assert "To fit: lower training.micro_batch_size" in err and "GiB" in err and "Traceback" not in err
    assert "run the same command again to resume" in err
    run = tmp_path / "runs" / "tiny"
    assert (run / "task" / "done.json").is_file() and (run / "build-vanilla" / "done.json").is_file()
    assert not stage_file.exists()

    # the kill is remembered: on a machine with less memory available than the stage had reached, the same stage
    # with the same settings is refused at once (here: a stage that had reached more than any machine has)
    killed = json.loads((run / "killed.json").read_text())
    assert killed[status["stage"]]["key"] == status["key"] and killed[status["stage"]]["peak_mb"] > 0
    killed[status["stage"]]["peak_mb"] = 1e9
    (run / "killed.json").write_text(json.dumps(killed))
    again = subprocess.run([str(harness), "run", str(recipe)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert f"the {status['stage']} stage would not fit: the kernel killed it at" in again.stderr
    assert "To fit: lower training.micro_batch_size" in again.stderr
    assert not (run / status["stage"] / "done.json").exists()
    # a changed setting gives it a new key: it runs, and once it finishes the kill is forgotten
    done = subprocess.run([str(harness), "run", str(recipe), "--set", "training.max_steps=4"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not (run / "killed.json").exists()
