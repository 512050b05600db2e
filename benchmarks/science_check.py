"""The science check: do the strategies' effects show on the synthetic multi-step arithmetic task?

Every strategy trains the same from-scratch GPT-2 (0.85M parameters) on an equal budget of training tokens,
from the same program teacher (8 sampled rationales per question, temperature 1.0, so diverse reasoning has
distinct phrasings to use), and is scored by lm-eval on the same 300 test problems. Reports test accuracy per
strategy, overall and by number of steps (2/3/4), over several seeds (mean and spread), prints a table, and
writes JSON and Markdown.

    python benchmarks/science_check.py [--seeds 0 1 2] [--budget-tokens 2000000] [--batch-size 16]
                                       [--out results/science_check]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STRATEGIES = [
    {"kind": "vanilla"},
    {"kind": "fine_tune_cot", "max_samples": 1},
    *({"kind": "diverse_reasoning", "name": f"diverse_D{d}", "samples": d} for d in (1, 2, 4, 8)),
    {"kind": "socratic", "mode": "two_models"},
    {"kind": "socratic", "name": "socratic_unified", "mode": "unified"},
    {"kind": "socratic", "name": "socratic_last", "mode": "two_models", "solver_context": "last"},
    {"kind": "step_by_step"},
]


def recipe(seed: int, budget: int, workdir: Path, batch_size: int = 16) -> dict:
    return {
        "run": {"name": f"science_seed{seed}", "seed": seed, "output_dir": str(workdir)},
        "task": {"kind": "synthetic_arithmetic", "train_size": 20000, "validation_size": 200, "test_size": 300},
        "teacher": {"kind": "program", "samples": 8, "temperature": 1.0, "seed": seed},
        "strategy": STRATEGIES,
        "student": [{"kind": "transformers", "name": "gpt2-0.85M", "tokenizer": "word",
                     "architecture": {"model_type": "gpt2", "n_layer": 4, "n_embd": 128, "n_head": 4,
                                      "n_positions": 256, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                                      "attn_pdrop": 0.0}}],
        "training": {"max_tokens": budget, "batch_size": batch_size, "learning_rate": 2e-3, "threads": 2},
        "evaluation": {"batch_size": 100, "max_gen_toks": 96},
        "sink": [{"kind": "local", "dir": str(workdir / "results")}],
    }


def by_steps(run_dir: Path, strategy: str) -> dict[str, float]:
    """Accuracy by number of operations, from lm-eval's per-sample log and the task's test split."""
    ops = {}
    for line in (run_dir / "task" / "test.jsonl").read_text().splitlines():
        example = json.loads(line)
        ops[example["id"]] = len(example["meta"]["ops"])
    (samples,) = (run_dir / f"evaluate-{strategy}" / "lm_eval").rglob("samples_*.jsonl")
    right: dict[int, list[float]] = {}
    for line in samples.read_text().splitlines():
        s = json.loads(line)
        right.setdefault(ops[s["doc"]["id"]], []).append(s["acc"])
    return {str(k): sum(v) / len(v) for k, v in sorted(right.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-tokens", type=int, default=2_000_000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workdir", default=str(REPO / "runs" / "science_check"))
    parser.add_argument("--out", default=str(REPO / "results" / "science_check"))
    args = parser.parse_args()

    from harness.pipeline import Pipeline
    from harness.plugins import load_registry
    from harness.recipe import recipe_from_dict

    registry = load_registry()
    workdir = Path(args.workdir)
    per_seed: dict[int, dict] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        r = recipe_from_dict(recipe(seed, args.budget_tokens, workdir, args.batch_size), Path(f"science_seed{seed}.toml"), registry)
        results = Pipeline(r, registry).run()
        run_dir = workdir / r.name
        per_seed[seed] = {name: {"acc": m["acc"], "by_steps": by_steps(run_dir, name)} for name, m in results.items()}
        for name in results:
            stages = [run_dir / f"train-{name}" / "done.json", *run_dir.glob(f"train-{name}-*/done.json")]
            stages = [p for p in stages if p.exists()]
            per_seed[seed][name]["train_seconds"] = sum(json.loads(p.read_text())["seconds"] for p in stages)
            per_seed[seed][name]["train_tokens"] = sum(json.loads(p.read_text())["record"]["tokens"] for p in stages)
    seconds = time.perf_counter() - started

    names = [s.get("name", s["kind"]) for s in STRATEGIES]
    summary = {}
    for name in names:
        accs = [per_seed[s][name]["acc"] for s in args.seeds]
        steps = {k: [per_seed[s][name]["by_steps"].get(k, 0.0) for s in args.seeds] for k in ("2", "3", "4")}
        summary[name] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                         "by_steps_mean": {k: statistics.mean(v) for k, v in steps.items()},
                         "per_seed": accs,
                         "train_tokens_mean": statistics.mean(per_seed[s][name]["train_tokens"] for s in args.seeds),
                         "train_seconds_mean": statistics.mean(per_seed[s][name]["train_seconds"] for s in args.seeds)}
    lines = [f"Science check: synthetic arithmetic, 0.85M-param GPT-2 from scratch, {args.budget_tokens:,} training "
             f"tokens per strategy in batches of {args.batch_size}, seeds {args.seeds}, test n=300 ({seconds / 60:.0f} min on this machine)", "",
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
                                                    "batch_size": args.batch_size,
                                                    "seconds": round(seconds, 1), "summary": summary,
                                                    "per_seed": per_seed}, indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
