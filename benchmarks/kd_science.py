"""Offline science with a language-model teacher: does logit-level or on-policy distillation beat Fine-tune-CoT at
an equal token budget, and does a student surpass its teacher?

1. The teacher: a from-scratch GPT-2 about 4x the quickstart student (4 layers, width 256), trained with
   Fine-tune-CoT on the program teacher's rationales in all three phrasings (diverse reasoning, D = 3), and
   deliberately not to convergence, so that it errs and a student has room to surpass it. Its greedy test
   accuracy comes from its own evaluation.
2. One teach pass with that model through the ``hf`` teacher: 4 samples per training question at temperature
   1.0, in the student's format, with the top-8 log-probabilities of every token (one cache serves every
   strategy and student). The filter stage reports its sampled accuracy and how many samples pass.
3. Students of the quickstart's size (0.85M, the teacher's tokenizer), each trained on the same budget of training
   tokens, several seeds: vanilla; Fine-tune-CoT on one teacher sample per question (filtered); ``logit_kd``
   (alpha 0.5) with the forward and with the reverse KL over the teacher's top-8 and its tail; and GKD's recipe,
   ``on_policy`` (half of each batch sampled by the student, JSD beta 0.5) started from the Fine-tune-CoT
   student (``init_from``) with a second budget, beside its control: Fine-tune-CoT continued from the same
   student for the same second budget.
4. A student as large as the teacher (same architecture, from scratch), with Fine-tune-CoT and forward
   ``logit_kd``: can a student learning from the teacher's samples end up better than the teacher?

Every student is scored by lm-eval on the same 300 test problems; accuracy by number of steps too. A question is
answered yes only when the lead is larger than the seed spread (the larger of the two standard deviations).

    python benchmarks/kd_science.py [--seeds 0 1 2] [--budget-tokens 1000000] [--quick]
                                    [--workdir runs/kd_science] [--out results/kd_science]

``--quick`` (one seed, small sizes: a few minutes) checks the whole path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from science_check import by_steps  # noqa: E402

STUDENT = {"model_type": "gpt2", "n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 256,
           "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
TEACHER = {**STUDENT, "n_embd": 256, "n_head": 8}
STRATEGIES = [
    {"kind": "vanilla"},
    {"kind": "fine_tune_cot", "name": "ftc", "max_samples": 1},
    {"kind": "logit_kd", "name": "kd_forward", "max_samples": 1, "alpha": 0.5, "divergence": "forward"},
    {"kind": "logit_kd", "name": "kd_reverse", "max_samples": 1, "alpha": 0.5, "divergence": "reverse"},
    {"kind": "fine_tune_cot", "name": "ftc_then_ftc", "max_samples": 1, "init_from": "ftc"},
    {"kind": "on_policy", "name": "ftc_then_on_policy", "max_samples": 1, "fraction": 0.5, "beta": 0.5,
     "max_new_tokens": 64, "init_from": "ftc"},
]
LARGE_STRATEGIES = [STRATEGIES[1], STRATEGIES[2]]
"""For the student as large as the teacher."""


def _any(answers) -> bool | None:
    """Yes if any is yes; no if all are no; else undecided."""
    answers = list(answers)
    return True if any(a is True for a in answers) else False if answers and all(a is False for a in answers) \
        else None


def lead(summary: dict, a: str, b: str) -> bool | None:
    """Whether ``a`` beats ``b`` by more than the seed spread (the larger of the two standard deviations); None
    when one of them has fewer than two seeds (no spread to judge by) or did not run."""
    if a not in summary or b not in summary or summary[a]["sd"] is None or summary[b]["sd"] is None:
        return None
    spread = max(summary[a]["sd"], summary[b]["sd"])
    return summary[a]["mean"] - summary[b]["mean"] > spread


def run(recipe: dict, name: str) -> tuple[dict, Path]:
    from harness._run.pipeline import Pipeline
    from harness._run.recipe import recipe_from_dict
    from harness._run.registry import load_registry

    registry = load_registry()
    r = recipe_from_dict(recipe, Path(f"{name}.toml"), registry)
    return Pipeline(r, registry).run(), Path(recipe["run"]["output_dir"]) / name


def teacher_recipe(work: Path, steps: int, train_size: int) -> dict:
    return {
        "run": {"name": "kd_teacher", "seed": 0, "output_dir": str(work)},
        "task": {"kind": "synthetic_arithmetic", "train_size": train_size, "validation_size": 200, "test_size": 300},
        "teacher": {"kind": "program", "samples": 3, "temperature": 1.0},
        "strategy": [{"kind": "diverse_reasoning", "name": "teacher", "samples": 3}],
        "student": [{"kind": "transformers", "name": "gpt2-4x", "tokenizer": "word", "architecture": TEACHER}],
        "training": {"max_steps": steps, "batch_size": 32, "learning_rate": 2e-3, "threads": 2},
        "evaluation": {"batch_size": 100, "max_gen_toks": 96},
        "sink": [{"kind": "local", "dir": str(work / "results")}],
    }


def student_recipe(work: Path, seed: int, teacher_dir: Path, budget: int, train_size: int,
                   strategies: list[dict], name: str = "kd", architecture: dict | None = None,
                   threads: int = 2) -> dict:
    return {
        "run": {"name": f"{name}_seed{seed}", "seed": seed, "output_dir": str(work)},
        "task": {"kind": "synthetic_arithmetic", "train_size": train_size, "validation_size": 200, "test_size": 300},
        "teacher": {"kind": "hf", "model": str(teacher_dir), "prompt": "fine_tune_cot", "samples": 4,
                    "temperature": 1.0, "top_logprobs": 8, "max_tokens": 96, "batch_size": 32, "seed": 0,
                    "cache_dir": str(work / "cache")},
        "strategy": strategies,
        "student": [{"kind": "transformers", "name": "gpt2-large" if architecture else "gpt2-0.85M",
                     "tokenizer": str(teacher_dir), "architecture": architecture or STUDENT}],
        "training": {"max_tokens": budget, "batch_size": 16, "learning_rate": 2e-3, "threads": threads},
        "evaluation": {"batch_size": 100, "max_gen_toks": 96},
        "sink": [{"kind": "local", "dir": str(work / "results")}],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget-tokens", type=int, default=1_000_000)
    p.add_argument("--teacher-steps", type=int, default=1200)
    p.add_argument("--train-size", type=int, default=4000, help="the students' training questions")
    p.add_argument("--quick", action="store_true", help="one seed, small sizes: checks the path in minutes")
    p.add_argument("--teacher-dir", default="",
                   help="use this trained teacher (a model folder with its kd_teacher run folder two levels up) "
                        "instead of training one")
    p.add_argument("--summarize", action="store_true",
                   help="train nothing: summarise the evaluations already finished in --workdir (a run cut short "
                        "reports the seeds and strategies it finished, each with its own count)")
    p.add_argument("--no-large", action="store_true",
                   help="leave out the student of the teacher's size (the slowest part: about 15 minutes per "
                        "student on 2 CPU cores)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each student's training")
    p.add_argument("--workdir", default=str(REPO / "runs" / "kd_science"))
    p.add_argument("--out", default=str(REPO / "results" / "kd_science"))
    args = p.parse_args()
    if args.quick:
        args.seeds, args.budget_tokens, args.teacher_steps, args.train_size = [0], 60_000, 150, 300
    work = Path(args.workdir)
    started = time.perf_counter()

    if args.teacher_dir:  # a teacher trained before (its run folder holds its evaluation)
        teacher_dir = Path(args.teacher_dir)
        teacher_run = teacher_dir.parent.parent
        teacher_greedy = json.loads((teacher_run / "evaluate-teacher" / "metrics.json").read_text())["acc"]
    else:
        teacher_results, teacher_run = run(teacher_recipe(work, args.teacher_steps, max(args.train_size, 20000)
                                                          if not args.quick else 2000), "kd_teacher")
        teacher_dir = teacher_run / "train-teacher" / "model"
        teacher_greedy = teacher_results["teacher"]["acc"]
    teacher_params = json.loads((teacher_run / "train-teacher" / "done.json").read_text())["record"]["parameters"]
    print(f"teacher: {teacher_params:,} parameters, greedy test accuracy {100 * teacher_greedy:.1f}%", flush=True)

    per_seed: dict[str, list[dict]] = {}
    report: dict = {}
    groups = [("kd", STRATEGIES, None, "")] + ([] if args.no_large else
                                               [("kd_large", LARGE_STRATEGIES, TEACHER, "large_")])
    for seed in args.seeds:
        for group, strategies, architecture, prefix in groups:
            if args.summarize:  # what finished, read back
                run_dir = work / f"{group}_seed{seed}"
                results = {name: json.loads((run_dir / f"evaluate-{name}" / "metrics.json").read_text())
                           for name in (s.get("name", s["kind"]) for s in strategies)
                           if (run_dir / f"evaluate-{name}" / "done.json").is_file()}
                if not results:
                    continue
            else:
                results, run_dir = run(student_recipe(work, seed, teacher_dir, args.budget_tokens,
                                                      args.train_size, strategies, group, architecture,
                                                      args.threads),
                                       f"{group}_seed{seed}")
            if not report:
                report = json.loads((run_dir / "filter" / "teacher_report.json").read_text())
            for name, m in results.items():
                done = json.loads((run_dir / f"train-{name}" / "done.json").read_text())
                rec = done["record"]
                per_seed.setdefault(prefix + name, []).append({
                    "seed": seed, "acc": m["acc"], "by_steps": by_steps(run_dir, name),
                    "train_seconds": done["seconds"], "train_tokens": rec["tokens"], "steps": rec["steps"],
                    "parameters": rec["parameters"], "final_loss": rec.get("final_loss"),
                    **({"objective": rec["objective"]} if "objective" in rec else {})})
            print(f"seed {seed} {group}: " + ", ".join(f"{n} {100 * m['acc']:.1f}%" for n, m in results.items()),
                  flush=True)

    summary = {}
    for name, runs in per_seed.items():
        accs = [100 * r["acc"] for r in runs]  # (--summarize: each strategy over the seeds it finished)
        steps_keys = sorted({k for r in runs for k in r["by_steps"]})
        summary[name] = {"mean": round(statistics.fmean(accs), 1),
                         "sd": round(statistics.stdev(accs), 1) if len(accs) > 1 else None,
                         "per_seed": [round(a, 1) for a in accs], "parameters": runs[0]["parameters"],
                         "by_steps": {k: round(100 * statistics.fmean(r["by_steps"].get(k, 0) for r in runs), 1)
                                      for k in steps_keys},
                         "surpasses_teacher_in_seeds": sum(a > 100 * teacher_greedy for a in accs)}
    teacher_row = {"mean": round(100 * teacher_greedy, 1), "sd": 0.0}
    answers = {
        "logit_kd_forward_beats_fine_tune_cot": lead(summary, "kd_forward", "ftc"),
        "logit_kd_reverse_beats_fine_tune_cot": lead(summary, "kd_reverse", "ftc"),
        "reverse_kl_beats_forward_kl": lead(summary, "kd_reverse", "kd_forward"),
        "on_policy_after_ftc_beats_ftc_continued": lead(summary, "ftc_then_on_policy", "ftc_then_ftc"),
        "a_student_surpasses_its_teacher": _any(lead({**summary, "teacher": teacher_row}, name, "teacher")
                                                for name in summary),
    }
    if not args.no_large:
        answers["the_large_student_beats_the_small_one_with_logit_kd"] = lead(summary, "large_kd_forward",
                                                                             "kd_forward")
    out = {"teacher": {"parameters": teacher_params, "architecture": TEACHER, "steps": args.teacher_steps,
                       "greedy_test_accuracy": round(100 * teacher_greedy, 1),
                       "sampled_train_accuracy": round(100 * report.get("sample_accuracy", 0), 1),
                       "samples": report.get("samples"), "samples_passing_filter": report.get("correct_samples"),
                       "questions_without_correct_sample": report.get("questions_without_correct")},
           "budget_tokens": args.budget_tokens, "train_questions": args.train_size, "seeds": args.seeds,
           "strategies": STRATEGIES, "large_student": None if args.no_large else
           {"architecture": TEACHER, "strategies": LARGE_STRATEGIES},
           "answer_rule": "yes only when the lead is larger than the larger of the two seed standard deviations",
           "summary": summary, "runs": per_seed, "answers": answers,
           "minutes": round((time.perf_counter() - started) / 60, 1)}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"Teacher: {teacher_params:,}-parameter GPT-2, greedy test accuracy "
             f"{out['teacher']['greedy_test_accuracy']}%"
             f", sampled (T = 1.0) train accuracy {out['teacher']['sampled_train_accuracy']}% "
             f"({report.get('correct_samples')}/{report.get('samples')} samples pass the filter).", "",
             f"| strategy | parameters | test accuracy (mean ± sd, {len(args.seeds)} seeds) | per seed | "
             + " | ".join(f"{k} steps" for k in sorted(summary["vanilla"]["by_steps"])) + " |",
             "|---|---|---|---|" + "---|" * len(summary["vanilla"]["by_steps"])]
    for name, s in summary.items():
        sd = f" ± {s['sd']}" if s["sd"] is not None else ""
        lines.append(f"| {name} | {s['parameters']:,} | **{s['mean']}**{sd} | {' / '.join(map(str, s['per_seed']))} | "
                     + " | ".join(str(v) for v in s["by_steps"].values()) + " |")
    lines += ["", f"{out['minutes']} minutes on this machine; budget {args.budget_tokens:,} training tokens per "
                  "student (the two `ftc_then_*` rows: a second budget on top of `ftc`'s student"
                  + ("" if args.no_large else f"; `large_*`: a student of the teacher's size, "
                                              f"{summary['large_ftc']['parameters']:,} parameters") + ").", "",
              "Answers (yes only when the lead is larger than the seed spread):", ""]
    said = {True: "yes", False: "no", None: "not decided (fewer than two seeds)"}
    lines += [f"- {question.replace('_', ' ')}: **{said[yes]}**" for question, yes in answers.items()]
    out_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
