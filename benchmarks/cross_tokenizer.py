"""Token-level distillation across tokenizers, measured: does a student with its own tokenizer learn more from the
teacher's top-k carried onto its tokens by text (``logit_kd`` with ``cross_tokenizer = true``) than from the same
rationales as text (Fine-tune-CoT), at an equal token budget? And what does the recorded signal cost on disk?

1. The teacher: the word-level GPT-2 of ``benchmarks/kd_science.py`` (its tokenizer: whole words), trained there
   with Fine-tune-CoT on the program teacher's rationales (``--teacher-dir``; without it a teacher is trained
   here the same way).
2. The student's tokenizer: a byte-level BPE (GPT-2's convention) trained on the task's training text with
   ``--vocab-size`` tokens, so the student splits many of the teacher's words.
3. One teach pass (the ``hf`` teacher: 4 samples per question at temperature 1.0, top-8 log-probabilities, cached
   and shared with kd_science when its cache folder is given), then per seed one student per arm, each trained on
   the same budget of training tokens (the student's tokens: the same texts through the same tokenizer), on one
   filtered sample per question: ``ftc`` (Fine-tune-CoT) and ``kd_cross`` (``logit_kd``, forward KL, alpha 0.5,
   ``cross_tokenizer = true``). Scored by lm-eval on the same 300 test problems.
4. Storage: the teacher's signals for 200 questions recorded at k = 8 and k = 20, as ids and text (what the
   ``hf`` teacher records) and as text only (what a hosted API gives), in bytes per teacher token: the JSON the
   teach stage stores, and that JSON compressed with zstd as Arrow IPC compresses a record batch.

    python benchmarks/cross_tokenizer.py [--teacher-dir runs/kd_science/kd_teacher/train-teacher/model]
        [--seeds 0 1 2] [--budget-tokens 2000000] [--quick] [--out results/cross_tokenizer]

A lead counts only when larger than the seed spread (the larger of the two standard deviations).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from kd_science import STUDENT, lead, run, teacher_recipe  # noqa: E402
from science_check import by_steps  # noqa: E402

ARMS = [
    {"kind": "fine_tune_cot", "name": "ftc", "max_samples": 1},
    {"kind": "logit_kd", "name": "kd_cross", "max_samples": 1, "alpha": 0.5, "divergence": "forward",
     "cross_tokenizer": True},
]


def student_tokenizer(folder: Path, train_size: int, vocab_size: int) -> Path:
    """A byte-level BPE trained on the task's training questions and the program teacher's rationales."""
    from harness.components import create
    from harness.testing import tiny_tokenizer

    if (folder / "tokenizer.json").is_file():
        return folder
    splits = create("task", "synthetic_arithmetic", train_size=train_size, validation_size=200,
                    test_size=300).load()
    texts = [f"{e.question} ### {e.rationale} --> {e.answer}" for e in splits["train"]]
    return tiny_tokenizer(folder, texts, kind="byte_bpe", vocab_size=vocab_size)


def recipe(work: Path, seed: int, teacher_dir: Path, tokenizer: Path, budget: int, train_size: int,
           cache: Path) -> dict:
    return {
        "run": {"name": f"cross_seed{seed}", "seed": seed, "output_dir": str(work)},
        "task": {"kind": "synthetic_arithmetic", "train_size": train_size, "validation_size": 200, "test_size": 300},
        "teacher": {"kind": "hf", "model": str(teacher_dir), "prompt": "fine_tune_cot", "samples": 4,
                    "temperature": 1.0, "top_logprobs": 8, "max_tokens": 96, "batch_size": 32, "seed": 0,
                    "cache_dir": str(cache)},
        "strategy": ARMS,
        "student": [{"kind": "transformers", "name": "gpt2-bpe", "tokenizer": str(tokenizer),
                     "architecture": STUDENT}],
        "training": {"max_tokens": budget, "batch_size": 16, "learning_rate": 2e-3, "threads": 2,
                     "logging_steps": 10},
        "evaluation": {"batch_size": 100, "max_gen_toks": 96},
        "sink": [{"kind": "local", "dir": str(work / "results")}],
    }


def storage(teacher_dir: Path, work: Path, questions: int) -> dict:
    """Bytes per teacher token of the recorded signals at k = 8 and 20, in both forms."""
    from harness.components import create
    from harness.records import GENERATIONS, RecordWriter

    task = create("task", "synthetic_arithmetic", train_size=questions, validation_size=0, test_size=1)
    examples = task.load()["train"]
    out: dict = {}
    for k in (8, 20):
        teacher = create("teacher", "hf", model=str(teacher_dir), prompt="fine_tune_cot", samples=1,
                         temperature=1.0, top_logprobs=k, max_tokens=96, batch_size=32, seed=0,
                         cache_dir=str(work / "storage-cache"))
        gens = [g for gs in teacher.generate(examples, task, lambda n: None) for g in gs]
        tokens = sum(len(g.meta["signals"]["target_ids"]) for g in gens)
        forms = {"ids_and_text": None, "text_only": ("target_ids", "topk_ids"), "ids_only": ("target_text",
                                                                                              "topk_text")}
        for form, dropped in forms.items():
            rows = [replace(g, meta={"signals": {n: v for n, v in g.meta["signals"].items()
                                                 if n not in (dropped or ())}}) for g in gens]
            bare = [replace(g, meta={}) for g in gens]
            sizes = {}
            for compression in (None, "zstd"):  # the JSON as such, and as the teach stage stores it
                kind = replace(GENERATIONS, compression=compression)
                per = []
                for records, name in ((rows, "with"), (bare, "without")):
                    path = work / f"storage-{k}-{form}-{name}-{compression}.arrow"
                    with RecordWriter(path, kind) as w:
                        w.write(records)
                    per.append(path.stat().st_size)
                sizes["json" if compression is None else compression] = round((per[0] - per[1]) / tokens, 1)
            out[f"k{k}_{form}"] = sizes
        out[f"k{k}_tokens"] = tokens
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher-dir", default=str(REPO / "runs" / "kd_science" / "kd_teacher" / "train-teacher" /
                                                "model"),
                   help="the trained teacher; written as kd_science was given it, so that its cached samples are "
                        "found (the hf teacher's cache names the model as written)")
    p.add_argument("--cache", default=str(REPO / "runs" / "kd_science" / "cache"),
                   help="the teacher cache (kd_science's: its samples are the same requests)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget-tokens", type=int, default=2_000_000)
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--vocab-size", type=int, default=320,
                   help="the student's BPE vocabulary (its 256 bytes and the merges on top)")
    p.add_argument("--storage-questions", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="one seed, small sizes, a small teacher: minutes")
    p.add_argument("--storage-only", action="store_true",
                   help="measure the recorded signal's size again and rewrite the reports, keeping the students' "
                        "results from --out's JSON")
    p.add_argument("--workdir", default=str(REPO / "runs" / "cross_tokenizer"))
    p.add_argument("--out", default=str(REPO / "results" / "cross_tokenizer"))
    args = p.parse_args()
    work = Path(args.workdir)
    started = time.perf_counter()
    teacher_dir = Path(args.teacher_dir)
    if args.quick:
        args.seeds, args.budget_tokens, args.train_size, args.storage_questions = [0], 40_000, 200, 20
        args.cache = str(work / "cache")
        _, teacher_run = run(teacher_recipe(work, 100, 1000), "kd_teacher")
        teacher_dir = teacher_run / "train-teacher" / "model"
    elif not (teacher_dir / "config.json").is_file():
        print(f"{teacher_dir}: no trained teacher; run benchmarks/kd_science.py first (it trains and keeps one), "
              "or give --teacher-dir", file=sys.stderr)
        return 2
    teacher_acc = json.loads((teacher_dir.parent.parent / "evaluate-teacher" / "metrics.json").read_text())["acc"]
    tokenizer = student_tokenizer(work / f"student-tokenizer-{args.vocab_size}", args.train_size, args.vocab_size)

    per_seed: dict[str, list[dict]] = {}
    if args.storage_only:
        kept = json.loads(Path(args.out).with_suffix(".json").read_text())
        per_seed, args.seeds = kept["runs"], kept["seeds"]
        args.budget_tokens, args.vocab_size = kept["budget_tokens"], kept["student"]["vocab_size"]
        started -= 60 * kept["minutes"]
    for seed in [] if args.storage_only else args.seeds:
        results, run_dir = run(recipe(work, seed, teacher_dir, tokenizer, args.budget_tokens, args.train_size,
                                      Path(args.cache)), f"cross_seed{seed}")
        for name, m in results.items():
            done = json.loads((run_dir / f"train-{name}" / "done.json").read_text())
            info = json.loads((run_dir / f"train-{name}" / "train.json").read_text())
            log = info.get("objective_log") or []
            per_seed.setdefault(name, []).append({
                "seed": seed, "acc": m["acc"], "by_steps": by_steps(run_dir, name), "steps": done["record"]["steps"],
                "train_tokens": done["record"]["tokens"], "train_seconds": done["seconds"],
                "parameters": done["record"]["parameters"],
                **({"aligned_share": round(statistics.fmean(x["aligned"] for x in log), 3)} if log and
                   "aligned" in log[0] else {})})
        print(f"seed {seed}: " + ", ".join(f"{n} {100 * m['acc']:.1f}%" for n, m in results.items()), flush=True)

    summary = {}
    for name, runs in per_seed.items():
        accs = [100 * r["acc"] for r in runs]
        summary[name] = {"mean": round(statistics.fmean(accs), 1),
                         "sd": round(statistics.stdev(accs), 1) if len(accs) > 1 else None,
                         "per_seed": [round(a, 1) for a in accs],
                         "train_tokens": [r["train_tokens"] for r in runs],
                         **({"aligned_share": round(statistics.fmean(r["aligned_share"] for r in runs), 3)}
                            if "aligned_share" in runs[0] else {})}
    bytes_per_token = storage(teacher_dir, work, args.storage_questions)
    answers = {"cross_tokenizer_logit_kd_beats_fine_tune_cot": lead(summary, "kd_cross", "ftc"),
               "fine_tune_cot_beats_cross_tokenizer_logit_kd": lead(summary, "ftc", "kd_cross")}
    out = {"teacher": {"dir": str(teacher_dir), "tokenizer": "word-level", "greedy_test_accuracy":
                       round(100 * teacher_acc, 1)},
           "student": {"tokenizer": "byte-level BPE", "vocab_size": args.vocab_size, "architecture": STUDENT},
           "budget_tokens": args.budget_tokens, "train_questions": args.train_size, "seeds": args.seeds,
           "arms": ARMS, "summary": summary, "runs": per_seed, "answers": answers,
           "answer_rule": "yes only when the lead is larger than the larger of the two seed standard deviations",
           "signal_bytes_per_token": bytes_per_token, "minutes": round((time.perf_counter() - started) / 60, 1)}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"Teacher: word-level GPT-2 (greedy test accuracy {out['teacher']['greedy_test_accuracy']}%); student: "
             f"byte-level BPE tokenizer ({args.vocab_size} tokens), the same architecture for "
             f"both arms, {args.budget_tokens:,} training tokens each.", "",
             f"| arm | test accuracy (mean ± sd, {len(args.seeds)} seeds) | per seed | student tokens with a "
             "teacher signal |", "|---|---|---|---|"]
    for name, s in summary.items():
        sd = f" ± {s['sd']}" if s["sd"] is not None else ""
        share = f"{100 * s['aligned_share']:.0f}%" if "aligned_share" in s else "-"
        lines.append(f"| {name} | **{s['mean']}**{sd} | {' / '.join(map(str, s['per_seed']))} | {share} |")
    said = {True: "yes", False: "no", None: "not decided (fewer than two seeds)"}
    lines += ["", "Answers (yes only when the lead is larger than the seed spread):", ""]
    lines += [f"- {q.replace('_', ' ')}: **{said[a]}**" for q, a in answers.items()]
    lines += ["", "Recorded signal, bytes per teacher token (as JSON / as the teach stage stores it, zstd-compressed "
                  "Arrow):",
              "", "| k | ids and text (hf teacher) | text only (hosted API) | ids only |", "|---|---|---|---|"]
    for k in (8, 20):
        b = bytes_per_token
        lines.append(f"| {k} | " + " | ".join(f"{b[f'k{k}_{f}']['json']} / {b[f'k{k}_{f}']['zstd']}"
                                              for f in ("ids_and_text", "text_only", "ids_only")) + " |")
    lines += ["", f"{out['minutes']} minutes on this machine."]
    out_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
