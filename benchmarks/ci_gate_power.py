"""The CI regression gate's power, measured: how often does ``harness compare`` cry wolf with no change, and how
large a drop does it catch?

Runs ``recipes/ci_regression.toml`` under conditions of known effect, several seeds each, then replays the gate
(``harness.results.compare``, the code ``harness compare`` runs) on every baseline/candidate split of those runs:

- ``none-t2``: no change, 2 threads (the baseline's own setting), seeds 0-5;
- ``none-t1``: no change, 1 thread: other numerics, as on another machine, seeds 0-2;
- ``steps450`` / ``steps300``: 25% / 50% fewer training steps, seeds 0-3;
- ``teacher30``: 30% of the teacher's rationales carry an arithmetic slip and the correctness filter is off
  (Fine-tune-CoT only), seeds 0-3.

For each gate variant it reports the false-alarm rate (no-change candidates flagged) and, per planted condition,
its true drop (mean over its seeds minus the no-change mean) and how often it is caught. Runs are resumable
(finished ones are skipped); each run's folder and log are under ``--work``.

    python benchmarks/ci_gate_power.py [--work /tmp/ci_gate] [--phase run|analyse|all]
                                       [--out benchmarks/results/ci_gate_power.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "ci_regression.toml"

CONDITIONS = {
    "none-t2": ([], range(6)),
    "none-t1": (["training.threads=1"], range(3)),
    "steps450": (["training.max_steps=450"], range(4)),
    "steps300": (["training.max_steps=300"], range(4)),
    "teacher30": (["teacher.error_rate=0.3", "strategy.1.filter=false"], range(4)),
}


def plan() -> list[tuple[str, int]]:
    """Runs in an order that makes partial results useful: the baseline's seeds first, then round-robin."""
    first = [("none-t2", s) for s in range(4)]
    rest = [(c, s) for c, (_, seeds) in CONDITIONS.items() for s in seeds if (c, s) not in first]
    rest.sort(key=lambda cs: (cs[1], list(CONDITIONS).index(cs[0])))
    return first + rest


def run_one(work: Path, condition: str, seed: int) -> dict:
    folder = work / f"{condition}-s{seed}"
    marker = folder / "timing.json"
    if marker.exists():
        return json.loads(marker.read_text())
    overrides, _ = CONDITIONS[condition]
    cmd = [sys.executable, "-m", "harness.cli", "run", str(RECIPE), "--set", f"run.seed={seed}",
           "--set", f'run.output_dir="{folder / "runs"}"', "--set", "sink.kind=local",
           "--set", f'sink.dir="{folder / "results"}"']
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (folder / "run.log").open("w") as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{condition} seed {seed} failed; see {folder / 'run.log'}")
    timing = {"condition": condition, "seed": seed, "seconds": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(timing))
    return timing


def run_all(work: Path) -> None:
    todo = plan()
    for i, (condition, seed) in enumerate(todo, 1):
        t = run_one(work, condition, seed)
        print(f"[{i}/{len(todo)}] {condition} seed {seed}: {t['seconds']:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/ci_gate")
    p.add_argument("--phase", choices=("run", "analyse", "all"), default="all")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ci_gate_power.json"))
    args = p.parse_args()
    work = Path(args.work)
    if args.phase in ("run", "all"):
        run_all(work)
    if args.phase in ("analyse", "all"):
        from ci_gate_analysis import analyse  # noqa: E402 (beside this file)

        analyse(work, Path(args.out))


if __name__ == "__main__":
    main()
