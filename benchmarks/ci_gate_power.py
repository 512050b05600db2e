"""The CI regression gate's power, measured: how often does ``harness compare`` cry wolf with no change, and how
large a drop does it catch?

Runs ``recipes/ci_regression.toml`` under conditions of known effect, several seeds each, then replays the gate
(``harness._results.gate.compare``, the code ``harness compare`` runs) on every baseline/candidate split of those runs:

- ``none-t2``: no change, 2 threads (the baseline's own setting), seeds 0-9;
- ``none-t1``: no change, 1 thread: other numerics, as on another machine, seeds 0-3;
- ``steps450`` / ``steps300``: 25% / 50% fewer training steps, seeds 0-3;
- ``teacher30``: 30% of the teacher's rationales carry an arithmetic slip and the correctness filter is off
  (Fine-tune-CoT only), seeds 0-3.

For each gate variant it reports the false-alarm rate (no-change candidates flagged) and, per planted condition,
its true drop (mean over its seeds minus the no-change mean) and how often it is caught. Runs are resumable
(finished ones are skipped); each run's folder and log are under ``--work``.

    python benchmarks/ci_gate_power.py [--work /tmp/ci_gate] [--phase run|analyse|all]
                                       [--out benchmarks/results/ci_gate_power.json]
    python benchmarks/ci_gate_power.py --work /tmp/ci_gate --export-baseline 6   # CI's committed baseline
"""

from __future__ import annotations

import argparse
import importlib
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
    "none-t2": ([], range(10)),
    "none-t1": (["training.threads=1"], range(4)),
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


# Analysis ---------------------------------------------------------------------------------------------------

VARIANTS = {
    # name: (candidate seeds, baseline seeds, method, max_drop, z)
    "before: 1 seed each, binomial stderr, max-drop 5": (1, 1, "stderr", 0.05, 1.96),
    "1 seed each, paired questions": (1, 1, "paired", 0.02, 1.96),
    "1 candidate seed vs 4 baseline seeds": (1, 4, "seeds", 0.02, 1.645),
    "2 candidate seeds vs 4 baseline seeds": (2, 4, "seeds", 0.02, 1.645),
    "3 candidate seeds vs 7 baseline seeds (what CI runs)": (3, 7, "seeds", 0.02, 1.645),
}
AFFECTED = {"steps450": ("vanilla", "fine_tune_cot"), "steps300": ("vanilla", "fine_tune_cot"),
            "teacher30": ("fine_tune_cot",)}


def load_runs(work: Path) -> dict[tuple[str, int], list]:
    from harness._results.rows import load

    runs = {}
    for condition, (_, seeds) in CONDITIONS.items():
        for seed in seeds:
            folder = work / f"{condition}-s{seed}"
            if (folder / "timing.json").exists():
                runs[(condition, seed)] = load(folder / "results")
    return runs


def _strategy(comparison) -> str:
    return comparison.key.split("/", 1)[0]


def trials(runs: dict, n_cand: int, n_base: int, candidates: str) -> list[tuple[list, list]]:
    """(baseline rows, candidate rows) splits: baselines are ``n_base`` no-change seeds at 2 threads; candidates
    ``n_cand`` seeds of ``candidates`` (never a seed the baseline holds)."""
    base_pool = sorted(s for c, s in runs if c == "none-t2")
    cand_pool = sorted(s for c, s in runs if c == candidates)
    out = []
    for base in itertools.combinations(base_pool, n_base):
        for cand in itertools.combinations(cand_pool, n_cand):
            if candidates == "none-t2" and set(base) & set(cand):
                continue
            out.append(([r for s in base for r in runs[("none-t2", s)]],
                        [r for s in cand for r in runs[(candidates, s)]]))
    return out


def analyse(work: Path, out: Path) -> dict:
    from harness._results.gate import compare

    runs = load_runs(work)
    means = {}
    for condition in CONDITIONS:
        per = {}
        for strategy in ("vanilla", "fine_tune_cot"):
            accs = [r.acc for (c, s), rows in runs.items() if c == condition for r in rows if r.run == strategy]
            if accs:
                per[strategy] = {"mean": round(100 * statistics.fmean(accs), 2),
                                 "sd": round(100 * statistics.stdev(accs), 2) if len(accs) > 1 else None,
                                 "seeds": len(accs)}
        means[condition] = per
    drops = {c: {s: round(means[c][s]["mean"] - means["none-t2"][s]["mean"], 2) for s in means[c]}
             for c in CONDITIONS if c != "none-t2" and means.get(c)}
    variants = {}
    for name, (n_cand, n_base, method, max_drop, z) in VARIANTS.items():
        result = {"candidate_seeds": n_cand, "baseline_seeds": n_base, "method": method, "max_drop": max_drop,
                  "z": z}
        alarms = total = 0
        for condition in ("none-t2", "none-t1"):
            for base, cand in trials(runs, n_cand, n_base, condition):
                found = compare(base, cand, max_drop, z, method=method)
                alarms += any(c.regression for c in found)
                total += 1
        result["false_alarms"] = {"trials": total, "flagged": alarms,
                                  "rate": round(alarms / total, 3) if total else None}
        caught = {}
        for condition, affected in AFFECTED.items():
            per = {}
            for strategy in affected:
                hits = n = 0
                for base, cand in trials(runs, n_cand, n_base, condition):
                    found = [c for c in compare(base, cand, max_drop, z, method=method) if _strategy(c) == strategy]
                    hits += any(c.regression for c in found)
                    n += 1
                if n:
                    per[strategy] = {"true_drop_points": -drops[condition][strategy], "trials": n,
                                     "caught_rate": round(hits / n, 3)}
            caught[condition] = per
        result["planted"] = caught
        powered = [d["true_drop_points"] for per in caught.values() for d in per.values() if d["caught_rate"] >= 0.9]
        result["smallest_drop_caught_90pct"] = min(powered) if powered else None
        variants[name] = result
    seconds = [json.loads((work / f"{c}-s{s}" / "timing.json").read_text())["seconds"] for c, s in runs]
    report = {"recipe": str(RECIPE.relative_to(REPO)), "runs": len(runs), "conditions": {
        c: {"overrides": o, "seeds": list(s)} for c, (o, s) in CONDITIONS.items()},
        "accuracy_percent": means, "true_drop_points_vs_no_change": drops, "variants": variants,
        "run_seconds_median": round(statistics.median(seconds), 1) if seconds else None,
        "note": "Trials reuse runs (every baseline/candidate split of the seeds), so they are not independent; "
                "rates are what the gate did on these runs, not a population estimate."}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("accuracy_percent", "true_drop_points_vs_no_change")}, indent=1))
    for name, v in variants.items():
        print(f"{name}: false alarms {v['false_alarms']['flagged']}/{v['false_alarms']['trials']}, planted "
              + ", ".join(f"{c}/{s} (drop {d['true_drop_points']:.1f}) caught {100 * d['caught_rate']:.0f}%"
                          for c, per in v["planted"].items() for s, d in per.items()))
    return report


def export_baseline(work: Path, seeds: int, target: Path) -> None:
    """The no-change runs' results (2 threads, seeds 0..seeds-1) as the committed CI baseline: lm-eval's results
    files as written, their per-sample files slimmed to what the gate reads (doc_id, the document's id, acc)."""
    import shutil

    if target.exists():
        shutil.rmtree(target)
    for seed in range(seeds):
        source = work / f"none-t2-s{seed}" / "results"
        for f in sorted(source.rglob("*")):
            if not f.is_file():
                continue
            dest = target / f"seed-{seed}" / f.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if f.name.startswith("samples_"):
                slim = []
                for line in f.read_text().split("\n"):
                    if line.strip():
                        r = json.loads(line)
                        slim.append(json.dumps({"doc_id": r["doc_id"], "doc": {"id": r["doc"].get("id")},
                                                "acc": r["acc"]}))
                dest.write_text("\n".join(slim) + "\n")
            else:
                shutil.copy2(f, dest)
    from harness._run.provenance import machine_facts

    importlib.import_module("torch")  # so the facts include torch's threads

    facts = {**machine_facts(), "recipe_threads": 2, "seeds": list(range(seeds)),
             "note": "recorded by benchmarks/ci_gate_power.py --export-baseline on the machine that ran the seeds"}
    (target / "machine.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"baseline: {seeds} seeds in {target}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/ci_gate")
    p.add_argument("--phase", choices=("run", "analyse", "all"), default="all")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ci_gate_power.json"))
    p.add_argument("--export-baseline", type=int, metavar="SEEDS",
                   help="write the first SEEDS no-change runs to results/baselines/ci_regression (what CI compares "
                        "against) and stop")
    args = p.parse_args()
    if args.export_baseline:
        export_baseline(Path(args.work), args.export_baseline, REPO / "results" / "baselines" / "ci_regression")
        return
    work = Path(args.work)
    if args.phase in ("run", "all"):
        run_all(work)
    if args.phase in ("analyse", "all"):
        analyse(work, Path(args.out))


if __name__ == "__main__":
    main()
