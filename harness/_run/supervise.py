"""A killed run says why. ``harness run`` from the command line runs the pipeline in a child process and watches
it: when the kernel kills the child (out of memory: signal 9, which the process itself can never report), the
parent names the stage it was in, the memory it had reached and the knob to turn. Finished stages are kept, as
always: running the same command again resumes.

The child writes the stage it starts to ``$HARNESS_STAGE_FILE`` (one small JSON file); the parent samples the
child's resident memory (and its children's) twice a second. A kill is remembered in the run folder
(``killed.json``: the stage, its content key and the memory it had reached): before that stage runs again with the
same key on a machine with no more memory available than that, the run stops at once with the same advice
(``check_memory``), instead of spending the stages before it and the stage itself to be killed again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.errors import RunError

STAGE_FILE_ENV = "HARNESS_STAGE_FILE"
SUPERVISED_ENV = "HARNESS_SUPERVISED"

KNOBS = {
    "task": "the task's data is held whole by its plugin; a task too large for memory returns a "
            "harness.data.GeneratedSplit (docs/data.md)",
    "teach": "lower the teacher's concurrency or batch size (teacher.concurrency, teacher.batch_size) or use a "
             "smaller teacher model",
    "filter": "the filter streams its input; a rationale this large is the teacher's (teacher.max_tokens)",
    "build": "the strategy holds its chunk whole; lower teacher.samples or the strategy's samples",
    "train": "lower training.micro_batch_size (the batch stays training.batch_size through gradient accumulation), "
             "shorten training.max_length, use DeepSpeed ZeRO with offload (training.deepspeed_stage = 3, "
             "training.deepspeed_offload = true), a LoRA adapter (student.lora) or fewer training.processes",
    "evaluate": "lower evaluation.batch_size or evaluation.max_gen_toks",
    "publish": "a sink holds the results whole",
}


KILLED = "killed.json"
"""In a run folder: the stages the kernel killed, each with its key and the memory it had reached."""


def note_stage(stage: str, run_dir: Path, key: str = "") -> None:
    """Called by the pipeline as a stage starts: where a supervising parent finds it."""
    path = os.environ.get(STAGE_FILE_ENV)
    if path:
        try:
            Path(path).write_text(json.dumps({"stage": stage, "run_dir": str(run_dir), "pid": os.getpid(),
                                              "key": key}))
        except OSError:
            pass


def _killed(run_dir: Path) -> dict[str, Any]:
    try:
        value = json.loads((run_dir / KILLED).read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember_kill(status: dict[str, Any], peak_mb: float) -> None:
    stage, run_dir = status.get("stage"), status.get("run_dir")
    if not stage or not run_dir or not peak_mb:
        return
    killed = _killed(Path(run_dir))
    killed[stage] = {"key": status.get("key", ""), "peak_mb": round(peak_mb, 1),
                     "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        (Path(run_dir) / KILLED).write_text(json.dumps(killed, indent=2) + "\n")
    except OSError:
        pass


def check_memory(stage: str, key: str, run_dir: Path) -> None:
    """Before a stage runs: if the kernel killed it the last time it ran with this key, and this machine has no
    more memory available now than it had reached then, it would be killed again: stop with the stage, the measured
    peak and the knob to turn. A stage that finishes is forgotten (``forget_kill``)."""
    last = _killed(run_dir).get(stage)
    if not isinstance(last, dict) or last.get("key") != key or not isinstance(last.get("peak_mb"), (int, float)):
        return
    available = _meminfo_mb("MemAvailable:")
    if available is None or available > last["peak_mb"]:
        return
    knob = KNOBS.get(stage.split("-", 1)[0], "use a machine with more memory")
    raise RunError(f"the {stage} stage would not fit: the kernel killed it at {last['peak_mb'] / 1024:.1f} GiB of "
                   f"resident memory the last time it ran with these settings ({last.get('when', '?')}), and this "
                   f"machine has {available / 1024:.1f} GiB available now. To fit: {knob}. Finished stages are "
                   f"kept; a changed setting, or more free memory, lets it run again")


def forget_kill(stage: str, run_dir: Path) -> None:
    killed = _killed(run_dir)
    if stage in killed:
        del killed[stage]
        try:
            if killed:
                (run_dir / KILLED).write_text(json.dumps(killed, indent=2) + "\n")
            else:
                (run_dir / KILLED).unlink(missing_ok=True)
        except OSError:
            pass


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (MiB), from /proc; 0 where it cannot be read."""
    total = 0.0
    try:
        pids = [pid]
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            pids += [int(c) for c in children.read_text().split()]
        for p in pids:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return total


def _meminfo_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def message(status: dict[str, Any], peak_mb: float, code: int) -> str:
    stage = status.get("stage", "")
    kind = stage.split("-", 1)[0]
    where = f"in the {stage} stage" if stage else "before its first stage"
    total = _meminfo_mb("MemTotal:")
    memory = f"{peak_mb / 1024:.1f} GiB" + (f" of this machine's {total / 1024:.1f} GiB" if total else "")
    cause = ("killed by the kernel, most likely out of memory" if code == -signal.SIGKILL
             else f"killed by signal {-code}")
    text = f"the run was {cause} {where} (resident memory reached {memory})."
    if kind in KNOBS and code == -signal.SIGKILL:
        text += f" To fit: {KNOBS[kind]}."
    return text + " Finished stages are kept; run the same command again to resume."


def supervise(argv: list[str], err: Any) -> int:
    """Run ``harness`` with ``argv`` in a child process; return its exit code, explaining a kernel kill."""
    stage_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"harness-stage-{os.getpid()}.json"
    env = {**os.environ, SUPERVISED_ENV: "1", STAGE_FILE_ENV: str(stage_file)}
    child = subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], env=env)
    forward = {s: signal.signal(s, lambda n, _f: child.send_signal(n)) for s in (signal.SIGTERM, signal.SIGHUP)}
    peak = 0.0
    try:
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                peak = max(peak, _rss_mb(child.pid))
            except KeyboardInterrupt:  # the child got the same Ctrl-C and reports it itself
                continue
    finally:
        for s, handler in forward.items():
            signal.signal(s, handler)
    try:
        status = json.loads(stage_file.read_text()) if stage_file.exists() else {}
    except (OSError, ValueError):
        status = {}
    stage_file.unlink(missing_ok=True)
    if code < 0 and code not in (-signal.SIGINT, -signal.SIGTERM):
        if code == -signal.SIGKILL:
            _remember_kill(status, peak)
        err.print(f"error: {message(status, peak, code)}", markup=False)
        return 1
    return 128 - code if code < 0 else code  # killed by SIGINT/SIGTERM: the shell's convention
