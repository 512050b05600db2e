"""The harness's logit-level distillation beside TRL's GKD trainer: the same tiny teacher and student, the same
training data (the teacher's own sampled rationales, as token ids), the same steps, optimiser settings and
seeds; both final losses and both accuracies side by side.

1. A teacher: a from-scratch GPT-2 (4 layers, width 128) trained with Fine-tune-CoT on the program teacher's
   rationales for a few hundred steps, so that it is right about half the time.
2. One teach pass through the ``hf`` teacher: one sample per training question at temperature 1.0, with the
   log-probabilities of *every* token of its vocabulary at every position (``top_logprobs`` = the vocabulary
   size), so that the harness's top-k loss has no tail and is the full-vocabulary loss TRL computes.
3. For each seed, three students of the same architecture and initial weights (2 layers, width 64):
   - ``harness k=V``: ``logit_kd`` with ``alpha = 0`` (the divergence only), generalised JSD at beta 0.5, from
     the recorded full distribution;
   - ``harness k=8``: the same from the teacher's top-8 and its tail bucket;
   - ``TRL GKD``: ``trl.experimental.gkd.GKDTrainer`` with ``lmbda = 0`` (supervised: the dataset's completions,
     no student samples), beta 0.5, the teacher model running alongside, on the same pairs (the harness's build
     stage file) through a collator that gives it the same token ids and labels.
   Both use the same learning rate, schedule, warm-up, weight decay, Adam beta2, gradient clipping, batch size
   and steps. The training order differs (the harness groups rows by length; TRL's trainer shuffles).
4. Accuracy: each final model answers the same 300 test questions greedily, read and graded the same way
   (the text after ``-->``, the task's answer rule), so the numbers compare exactly.

    python benchmarks/kd_vs_trl.py [--seeds 0 1 2] [--steps 300] [--quick]
                                   [--workdir runs/kd_vs_trl] [--out benchmarks/results/kd_vs_trl.json]

Needs TRL (``pip install -e ".[test]"`` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TEACHER = {"model_type": "gpt2", "n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 256,
           "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
STUDENT = {**TEACHER, "n_layer": 2, "n_embd": 64, "n_head": 2}
TRAINING = {"batch_size": 16, "learning_rate": 2e-3, "weight_decay": 0.01, "warmup_ratio": 0.05,
            "lr_scheduler": "cosine_with_min_lr", "min_lr_ratio": 0.1, "adam_beta2": 0.98, "max_grad_norm": 1.0,
            "threads": 2, "logging_steps": 10}


def run(recipe: dict, name: str) -> tuple[dict, Path]:
    from harness._run.pipeline import Pipeline
    from harness._run.recipe import recipe_from_dict
    from harness._run.registry import load_registry

    registry = load_registry()
    r = recipe_from_dict(recipe, Path(f"{name}.toml"), registry)
    return Pipeline(r, registry).run(), Path(recipe["run"]["output_dir"]) / name


def teacher_model(work: Path, steps: int, train_size: int) -> Path:
    recipe = {
        "run": {"name": "teacher", "seed": 0, "output_dir": str(work)},
        "task": {"kind": "synthetic_arithmetic", "train_size": train_size, "validation_size": 0, "test_size": 300},
        "teacher": {"kind": "program", "samples": 3, "temperature": 1.0},
        "strategy": [{"kind": "diverse_reasoning", "name": "teacher", "samples": 3}],
        "student": [{"kind": "transformers", "name": "teacher", "tokenizer": "word", "architecture": TEACHER}],
        "training": {**TRAINING, "max_steps": steps, "batch_size": 32},
        "evaluation": {"batch_size": 100, "max_gen_toks": 96, "limit": 50},
        "sink": [{"kind": "local", "dir": str(work / "results")}],
    }
    _, folder = run(recipe, "teacher")
    return folder / "train-teacher" / "model"


def harness_students(work: Path, teacher: Path, seed: int, steps: int, train_size: int, vocab: int) -> Path:
    recipe = {
        "run": {"name": f"harness_seed{seed}", "seed": seed, "output_dir": str(work)},
        "task": {"kind": "synthetic_arithmetic", "train_size": train_size, "validation_size": 0, "test_size": 300},
        "teacher": {"kind": "hf", "model": str(teacher), "prompt": "fine_tune_cot", "samples": 1,
                    "temperature": 1.0, "top_logprobs": vocab, "max_tokens": 96, "batch_size": 32, "seed": 0,
                    "cache_dir": str(work / "cache")},
        "strategy": [
            {"kind": "logit_kd", "name": "harness_kV", "alpha": 0.0, "divergence": "jsd", "beta": 0.5,
             "filter": False},
            {"kind": "logit_kd", "name": "harness_k8", "alpha": 0.0, "divergence": "jsd", "beta": 0.5,
             "filter": False, "top_k": 8},
        ],
        "student": [{"kind": "transformers", "name": "student", "tokenizer": str(teacher), "architecture": STUDENT}],
        "training": {**TRAINING, "max_steps": steps, "seed": seed},
        "evaluation": {"batch_size": 100, "max_gen_toks": 96},
        "sink": [{"kind": "local", "dir": str(work / "results")}],
    }
    _, folder = run(recipe, f"harness_seed{seed}")
    return folder


def trl_student(folder: Path, teacher: Path, seed: int, steps: int, out: Path) -> dict:
    """TRL's GKD trainer on the harness's own training pairs (``build-harness_kV/train.arrow``): the prompt's
    ids, then the teacher's sampled tokens as the labels, exactly as the harness encodes them."""
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from harness.records import TRAINING as PAIRS
    from harness.records import RecordTable
    from harness_builtins.student_transformers.encoding import Collator, encode

    tok = AutoTokenizer.from_pretrained(str(teacher))
    pairs = list(RecordTable(folder / "build-harness_kV" / "train.arrow", PAIRS))
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in encode(tok, pairs, 256)]
    collate = Collator(tok.pad_token_id)

    def collator(batch):
        out = collate(batch)
        return {k: out[k] for k in ("input_ids", "attention_mask", "labels")}

    torch.manual_seed(seed)  # the harness builds the student the same way: the same initial weights
    ids = {"bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    arch = {k: v for k, v in STUDENT.items() if k != "model_type"}
    student = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", vocab_size=len(tok), **ids, **arch))
    teacher_net = AutoModelForCausalLM.from_pretrained(str(teacher))
    t = TRAINING
    args = GKDConfig(output_dir=str(out / "trainer"), max_steps=steps, per_device_train_batch_size=t["batch_size"],
                     learning_rate=t["learning_rate"], weight_decay=t["weight_decay"],
                     warmup_steps=int(t["warmup_ratio"] * steps + 0.999), lr_scheduler_type=t["lr_scheduler"],
                     lr_scheduler_kwargs={"min_lr_rate": t["min_lr_ratio"]}, adam_beta2=t["adam_beta2"],
                     max_grad_norm=t["max_grad_norm"], logging_steps=t["logging_steps"], seed=seed, data_seed=seed,
                     lmbda=0.0, beta=0.5, temperature=1.0, report_to=[], save_strategy="no", use_cpu=True,
                     disable_tqdm=True, max_length=256, dataloader_num_workers=0)
    trainer = GKDTrainer(model=student, teacher_model=teacher_net, args=args, processing_class=tok,
                         train_dataset=Dataset.from_list(rows), data_collator=collator)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"final_loss": losses[-1], "losses": losses, "train_loss": result.training_loss,
            "seconds": round(seconds, 1)}


def accuracy(model_dir: Path, folder: Path) -> float:
    """Greedy answers to the run's 300 test questions, read after ``-->`` and graded by the task's rule."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness import answers
    from harness.components import create
    from harness.generation import greedy_generate
    from harness.records import EXAMPLES, RecordTable

    spec = create("task", "synthetic_arithmetic").answer
    test = list(RecordTable(folder / "task" / "test.arrow", EXAMPLES))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    texts = greedy_generate(model, tok, [f"{e.question} ###" for e in test], 96, batch_size=50, stop=["###"])
    right = [answers.is_correct(answers.extract(t, spec, "-->"), e.answer, spec) for t, e in zip(texts, test)]
    return sum(right) / len(right)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--teacher-steps", type=int, default=400)
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--threads", type=int, default=TRAINING["threads"], help="torch threads for every training")
    p.add_argument("--quick", action="store_true", help="one seed, few steps: checks the path in minutes")
    p.add_argument("--workdir", default=str(REPO / "runs" / "kd_vs_trl"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "kd_vs_trl.json"))
    args = p.parse_args()
    if args.quick:
        args.seeds, args.steps, args.teacher_steps, args.train_size = [0], 20, 40, 200
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from transformers import AutoTokenizer

    TRAINING["threads"] = args.threads
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    started = time.perf_counter()
    teacher = teacher_model(work, args.teacher_steps, max(args.train_size, 4000))
    vocab = len(AutoTokenizer.from_pretrained(str(teacher)))
    teacher_acc = accuracy(teacher, work / "teacher")
    print(f"teacher: greedy test accuracy {100 * teacher_acc:.1f}%, vocabulary {vocab} tokens", flush=True)

    runs: dict[str, list[dict]] = {"harness k=V": [], "harness k=8": [], "TRL GKD": []}
    for seed in args.seeds:
        folder = harness_students(work, teacher, seed, args.steps, args.train_size, vocab)
        for name, strategy in (("harness k=V", "harness_kV"), ("harness k=8", "harness_k8")):
            record = json.loads((folder / f"train-{strategy}" / "train.json").read_text())
            runs[name].append({"seed": seed, "final_loss": record["final_loss"], "train_loss": record["train_loss"],
                               "seconds": record["seconds"],
                               "accuracy": accuracy(folder / f"train-{strategy}" / "model", folder)})
        trl = trl_student(folder, teacher, seed, args.steps, work / f"trl_seed{seed}")
        runs["TRL GKD"].append({"seed": seed, "final_loss": trl["final_loss"], "train_loss": trl["train_loss"],
                                "seconds": trl["seconds"], "accuracy": accuracy(work / f"trl_seed{seed}" / "model",
                                                                                 folder)})
        print(f"seed {seed}: " + ", ".join(f"{n} loss {r[-1]['final_loss']:.4f} acc {100 * r[-1]['accuracy']:.1f}%"
                                           for n, r in runs.items()), flush=True)

    def stats(values: list[float]) -> dict:
        return {"mean": round(statistics.fmean(values), 4),
                "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None}

    summary = {name: {"final_loss": stats([r["final_loss"] for r in rs]),
                      "accuracy_percent": stats([100 * r["accuracy"] for r in rs]),
                      "train_seconds": stats([r["seconds"] for r in rs])} for name, rs in runs.items()}
    out = {"teacher": {"architecture": TEACHER, "steps": args.teacher_steps, "vocabulary": vocab,
                       "greedy_test_accuracy_percent": round(100 * teacher_acc, 1)},
           "student": STUDENT, "training": {**TRAINING, "steps": args.steps}, "train_questions": args.train_size,
           "seeds": args.seeds, "summary": summary, "runs": runs,
           "loss": "generalised JSD, beta 0.5, temperature 1, averaged over the target tokens (both)",
           "machine": f"{os.cpu_count()} CPUs", "minutes": round((time.perf_counter() - started) / 60, 1)}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n| | final loss (mean ± sd, {len(args.seeds)} seeds) | test accuracy % | train seconds |")
    print("|---|---|---|---|")
    for name, s in summary.items():
        def cell(x: dict) -> str:
            return f"{x['mean']}" + (f" ± {x['sd']}" if x["sd"] is not None else "")
        print(f"| {name} | {cell(s['final_loss'])} | {cell(s['accuracy_percent'])} | {cell(s['train_seconds'])} |")
    print(f"\nwritten {path} ({out['minutes']} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
