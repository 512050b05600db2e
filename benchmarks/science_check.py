"""The science check: do the strategies' effects show on the synthetic multi-step arithmetic task?

Every strategy trains the same from-scratch GPT-2 (0.85M parameters) on an equal budget of training tokens,
from the same program teacher (8 sampled rationales per question, temperature 1.0, so diverse reasoning has
distinct phrasings to use), and is scored by lm-eval on the same 300 test problems. Reports test accuracy per
strategy, overall and by number of steps (2/3/4), over several seeds (mean and spread), prints a table, and
writes JSON and Markdown.

The work is split into (seed, group of strategies) runs, ``--jobs`` of them at a time, each process with
``cores / jobs`` threads: on 2 cores two one-thread trainings put through 1.34x the tokens of one two-thread
training (measured: 9.4k + 9.5k vs 14.1k tokens/s). Each run's log is ``<workdir>/<run>.log``.

Diverse reasoning with D = 1 trains on the same data as ``fine_tune_cot`` (one correct rationale per question),
so it is not run again: ``--strategies diverse_D1`` runs it.

    python benchmarks/science_check.py [--seeds 0 1 2] [--budget-tokens 2000000] [--batch-size 16]
                                       [--jobs 2] [--strategies NAME ...] [--train-size 20000]
                                       [--out results/science_check]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Each group is one run (one run folder) per seed; the two groups cost about the same (4 x budget tokens).
GROUPS = {
    "a": [{"kind": "vanilla"},
          {"kind": "fine_tune_cot", "max_samples": 1},
          {"kind": "diverse_reasoning", "name": "diverse_D2", "samples": 2},
          {"kind": "socratic", "mode": "two_models", "packed": True}],
    "b": [{"kind": "diverse_reasoning", "name": "diverse_D4", "samples": 4},
          {"kind": "diverse_reasoning", "name": "diverse_D8", "samples": 8},
          {"kind": "socratic", "name": "socratic_unified", "mode": "unified", "packed": True},
          {"kind": "step_by_step"}],
    # not run by default: D = 1 is fine_tune_cot's data; the per-turn Socratic forms are the ablation
    "extra": [{"kind": "diverse_reasoning", "name": "diverse_D1", "samples": 1},
              {"kind": "socratic", "name": "socratic_per_turn", "mode": "two_models"},
              {"kind": "socratic", "name": "socratic_unified_per_turn", "mode": "unified"},
              {"kind": "socratic", "name": "socratic_last_per_turn", "mode": "two_models",
               "solver_context": "last"},
              {"kind": "socratic", "name": "socratic_packed_s75", "mode": "two_models", "packed": True,
               "solver_share": 0.75}],
}
DEFAULT = [s for g in ("a", "b") for s in GROUPS[g]]


def name_of(strategy: dict) -> str:
    return strategy.get("name", strategy["kind"])


def recipe(seed: int, budget: int, workdir: Path, batch_size: int = 16, strategies: list[dict] = DEFAULT,
           threads: int = 2, run_name: str | None = None, train_size: int = 20000) -> dict:
    return {
        "run": {"name": run_name or f"science_seed{seed}", "seed": seed, "output_dir": str(workdir)},
        "task": {"kind": "synthetic_arithmetic", "train_size": train_size, "validation_size": 200, "test_size": 300},
        "teacher": {"kind": "program", "samples": 8, "temperature": 1.0, "seed": seed},
        "strategy": strategies,
        "student": [{"kind": "transformers", "name": "gpt2-0.85M", "tokenizer": "word",
                     "architecture": {"model_type": "gpt2", "n_layer": 4, "n_embd": 128, "n_head": 4,
                                      "n_positions": 256, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                                      "attn_pdrop": 0.0}}],
        "training": {"max_tokens": budget, "batch_size": batch_size, "learning_rate": 2e-3, "threads": threads},
        "evaluation": {"batch_size": 100, "max_gen_toks": 96},
        "sink": [{"kind": "local", "dir": str(workdir / "results")}],
    }


def by_steps(run_dir: Path, strategy: str) -> dict[str, float]:
    """Accuracy by number of operations, from lm-eval's per-sample log and the task's test split."""
    from harness.records import EXAMPLES, RecordTable

    ops = {}
    for example in RecordTable(run_dir / "task" / "test.arrow", EXAMPLES):
        ops[example.id] = len(example.meta["ops"])
    (samples,) = (run_dir / f"evaluate-{strategy}" / "lm_eval").rglob("samples_*.jsonl")
    right: dict[int, list[float]] = {}
    for line in filter(None, samples.read_text().split("\n")):
        s = json.loads(line)
        right.setdefault(ops[s["doc"]["id"]], []).append(s["acc"])
    return {str(k): sum(v) / len(v) for k, v in sorted(right.items())}


def run_group(seed: int, group: str, strategies: list[dict], budget: int, batch_size: int, threads: int,
              workdir: str, train_size: int = 20000) -> tuple[int, dict]:
    """One (seed, group) run in its own process, its output in ``<workdir>/<run>.log``: per-strategy accuracy,
    accuracy by steps, training seconds and tokens."""
    from harness._run.pipeline import Pipeline
    from harness._run.recipe import recipe_from_dict
    from harness._run.registry import load_registry

    work = Path(workdir)
    name = f"science_seed{seed}_{group}"
    work.mkdir(parents=True, exist_ok=True)
    with open(work / f"{name}.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        registry = load_registry()
        r = recipe_from_dict(recipe(seed, budget, work, batch_size, strategies, threads, name, train_size),
                             Path(f"{name}.toml"), registry)
        results = Pipeline(r, registry).run()
    run_dir = work / name
    out = {}
    for strategy, m in results.items():
        stages = [p for p in [run_dir / f"train-{strategy}" / "done.json",
                              *run_dir.glob(f"train-{strategy}-*/done.json")] if p.exists()]
        done = [json.loads(p.read_text()) for p in stages]
        out[strategy] = {"acc": m["acc"], "by_steps": by_steps(run_dir, strategy),
                         "train_seconds": sum(d["seconds"] for d in done),
                         "train_tokens": sum(d["record"]["tokens"] for d in done)}
    return seed, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-tokens", type=int, default=2_000_000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=20000,
                        help="training questions (default 20000; fewer shows what diverse reasoning adds)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--strategies", nargs="+", metavar="NAME",
                        help="run only these (default: every strategy of groups a and b)")
    parser.add_argument("--workdir", default=str(REPO / "runs" / "science_check"))
    parser.add_argument("--out", default=str(REPO / "results" / "science_check"))
    args = parser.parse_args()

    everything = {name_of(s): (g, s) for g, group in GROUPS.items() for s in group}
    wanted = args.strategies or [name_of(s) for s in DEFAULT]
    unknown = [n for n in wanted if n not in everything]
    if unknown:
        parser.error(f"--strategies: unknown {unknown}; known: {sorted(everything)}")
    groups: dict[str, list[dict]] = {}
    for n in wanted:
        g, s = everything[n]
        groups.setdefault(g, []).append(s)
    jobs = max(1, min(args.jobs, len(groups) * len(args.seeds)))
    threads = max(1, (os.cpu_count() or 2) // jobs)

    from rich.progress import Progress

    per_seed: dict[int, dict] = {seed: {} for seed in args.seeds}
    started = time.perf_counter()
    items = [(seed, g) for seed in args.seeds for g in groups]
    print(f"{len(items)} runs ({len(args.seeds)} seeds x {len(groups)} groups), {jobs} at a time, "
          f"{threads} thread(s) each; logs in {args.workdir}/science_seed*_*.log")
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool, Progress() as progress:
        bar = progress.add_task("science check", total=len(items))
        futures = {pool.submit(run_group, seed, g, groups[g], args.budget_tokens, args.batch_size, threads,
                               args.workdir, args.train_size): (seed, g) for seed, g in items}
        for future in as_completed(futures):
            seed, g = futures[future]
            try:
                _, out = future.result()
            except Exception as exc:
                progress.console.print(f"[red]run science_seed{seed}_{g} failed:[/red] {exc} "
                                       f"(see {args.workdir}/science_seed{seed}_{g}.log)")
                pool.shutdown(cancel_futures=True)
                return 1
            per_seed[seed].update(out)
            progress.console.print(f"seed {seed} group {g}: " + ", ".join(
                f"{n} {100 * m['acc']:.1f}%" for n, m in out.items()))
            progress.advance(bar)
    seconds = time.perf_counter() - started

    names = wanted
    summary = {}
    for name in names:
        accs = [per_seed[s][name]["acc"] for s in args.seeds]
        steps = {k: [per_seed[s][name]["by_steps"].get(k, 0.0) for s in args.seeds] for k in ("2", "3", "4")}
        summary[name] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                         "by_steps_mean": {k: statistics.mean(v) for k, v in steps.items()},
                         "per_seed": accs,
                         "train_tokens_mean": statistics.mean(per_seed[s][name]["train_tokens"] for s in args.seeds),
                         "train_seconds_mean": statistics.mean(per_seed[s][name]["train_seconds"] for s in args.seeds)}
    lines = [f"Science check: synthetic arithmetic ({args.train_size:,} training questions), 0.85M-param GPT-2 "
             f"from scratch, {args.budget_tokens:,} training "
             f"tokens per strategy in batches of {args.batch_size}, seeds {args.seeds}, test n=300 "
             f"({seconds / 60:.0f} min on this machine, {jobs} runs at a time)", "",
             "| strategy | accuracy (mean ± sd) | 2 steps | 3 steps | 4 steps | train tokens | train s |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        b = s["by_steps_mean"]
        lines.append(f"| {name} | {100 * s['mean']:.1f} ± {100 * s['std']:.1f} | {100 * b['2']:.1f} | "
                     f"{100 * b['3']:.1f} | {100 * b['4']:.1f} | {s['train_tokens_mean']:,.0f} | "
                     f"{s['train_seconds_mean']:.0f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"budget_tokens": args.budget_tokens, "seeds": args.seeds,
                                                    "batch_size": args.batch_size, "jobs": jobs,
                                                    "train_size": args.train_size,
                                                    "seconds": round(seconds, 1), "summary": summary,
                                                    "per_seed": per_seed}, indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
