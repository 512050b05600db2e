"""Training throughput: useful (non-padding) tokens per second, the harness's training against a plain
transformers Trainer with default settings, on the same model, data, batch size and steps.

Data (both in the Fine-tune-CoT format, ``{question} ###`` -> `` {rationale} --> {answer}``):
- ``gsm8k``: GSM8K's Fine-tune-CoT train split with its human rationales (``<<calc>>`` annotations kept), from
  ``$HARNESS_DATA_DIR`` (default ``../shared/data``): long and very uneven lengths;
- ``synthetic``: the quickstart's synthetic arithmetic with the program teacher: short, fairly even lengths.

Contenders, each training the quickstart's 0.85M-parameter GPT-2 (4 layers, width 128, 512 positions) for the
same number of steps of batch 32 on the same tokenized rows:
- ``harness``: the transformers student as a recipe runs it (length-grouped batches padded to their own
  longest row);
- ``trainer_dynamic``: ``Trainer`` defaults (random order) with ``DataCollatorForSeq2Seq`` padding each batch to
  its longest row: the most frugal default;
- ``trainer_max_length``: ``Trainer`` defaults with every row padded to the longest one in the data (what
  ``tokenizer(..., padding="max_length")`` gives);
- ``trl_sft``: TRL's ``SFTTrainer`` on a prompt-completion dataset (completion-only loss), per-batch padding;
- ``trl_sft_grouped``: the same with length-grouped batches (its packing and padding-free modes need
  FlashAttention, or examples attend to each other);
- ``trl_sft_grouped_no_ckpt``: the same without TRL's default gradient checkpointing: TRL's best correct setting
  on a CPU. Needs ``pip install trl`` (``.[bench]``).
Useful tokens per second = non-padding tokens trained on / wall time of ``trainer.train()``; padding = the share
of the positions put through the model that are padding. Targets: the harness at least 1.5x ``trainer_dynamic``
and at least TRL's best. Prints the table and writes JSON.

    python benchmarks/padding_efficiency.py [--data gsm8k synthetic] [--steps 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARCH = {"model_type": "gpt2", "n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 512,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def gsm8k_rows(data_dir: Path):
    """GSM8K's train split in the Fine-tune-CoT format with its human rationales (the gold-rationale variant)."""
    from harness._run.registry import load_registry
    from harness.types import TrainingExample

    registry = load_registry()
    task_cls = registry.get("task", "gsm8k").factory
    train = task_cls(task_cls.Config(data_dir=str(data_dir))).load()["train"]
    return [TrainingExample(e.id, f"{e.question} ###", f" {' '.join(e.rationale.split())} --> {e.answer}")
            for e in train if e.rationale]


def synthetic_rows():
    from harness.answers import extract, is_correct
    from harness.types import GradedGeneration
    from harness_builtins.strategy_fine_tune_cot import Config, FineTuneCoT
    from harness_builtins.task_synthetic import Config as TaskConfig
    from harness_builtins.task_synthetic import SyntheticArithmetic
    from harness_builtins.teacher_program import Config as TeacherConfig
    from harness_builtins.teacher_program import ProgramTeacher

    task = SyntheticArithmetic(TaskConfig(train_size=5000, validation_size=0, test_size=1))
    train = task.load()["train"]
    generations = ProgramTeacher(TeacherConfig()).generate(train, task, lambda n: None)
    graded = {e.id: [GradedGeneration(g, g.answer_text, is_correct(extract(g.answer_text, task.answer, None),
                                                                    e.answer, task.answer)) for g in gens]
              for e, gens in zip(train, generations)}
    return FineTuneCoT(Config()).build(train, graded, task)


def scratch_model(tokenizer, seed: int):
    """The benchmark's GPT-2 (``ARCH``) with random weights from ``seed``, sized to ``tokenizer``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = dict(ARCH)
    config = AutoConfig.for_model(arch.pop("model_type"), vocab_size=len(tokenizer),
                                  bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **arch)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def plain_trainer(rows, tokenizer, steps: int, batch: int, pad_to_max: bool, seed: int, out: Path) -> dict:
    """A transformers Trainer with default settings on the same encoded rows."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from harness_builtins.student_transformers import encode

    encoded = encode(tokenizer, rows, ARCH["n_positions"])
    useful = [len(r["input_ids"]) for r in encoded]
    if pad_to_max:
        width = max(useful)
        encoded = [{"input_ids": r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"])),
                    "labels": r["labels"] + [-100] * (width - len(r["labels"])),
                    "attention_mask": [1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))}
                   for r in encoded]
    model = scratch_model(tokenizer, seed)

    class Counting(DataCollatorForSeq2Seq):
        tokens = 0

        computed = 0

        def __call__(self, features, return_tensors=None):
            Counting.tokens += sum(sum(f["attention_mask"]) if "attention_mask" in f else len(f["input_ids"])
                                   for f in features)
            out = super().__call__(features, return_tensors)
            Counting.computed += int(out["input_ids"].numel())
            return out

    collator = Counting(tokenizer, padding=True, label_pad_token_id=-100)
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=2e-3, report_to=[], disable_tqdm=True, save_strategy="no",
                             use_cpu=True, seed=seed, logging_steps=10_000)
    trainer = Trainer(model=model, args=args, train_dataset=encoded, data_collator=collator)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"useful_tokens": Counting.tokens, "computed_tokens": Counting.computed, "seconds": round(seconds, 2),
            "useful_tokens_per_second": round(Counting.tokens / seconds, 1)}


def trl_training(rows, tokenizer, steps: int, batch: int, seed: int, out: Path, group_by_length: bool,
                 checkpointing: bool = True) -> dict:
    """TRL's SFTTrainer on the same rows as a prompt-completion dataset (loss on the completion only, EOS
    appended by TRL), with the settings its docs give for this case. Packing and padding-free batches are correct
    only with FlashAttention (TRL's docs: examples would attend to each other otherwise), which a CPU does not
    have, so the best correct setting here is per-batch padding, optionally with length-grouped batches. TRL turns
    gradient (activation) checkpointing on by default, which recomputes activations in the backward pass: the
    ``checkpointing = False`` row turns it off, as one would for a model this small."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = scratch_model(tokenizer, seed)
    data = Dataset.from_list([{"prompt": r.prompt, "completion": r.target} for r in rows])
    counts = {"useful": 0, "computed": 0}

    class Counting(SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            counts["useful"] += int(inputs["attention_mask"].sum())
            counts["computed"] += int(inputs["input_ids"].numel())
            return super().compute_loss(model, inputs, *args, **kwargs)

    args = SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-3,
                     report_to=[], disable_tqdm=True, save_strategy="no", use_cpu=True, seed=seed,
                     logging_steps=10_000, max_length=ARCH["n_positions"], completion_only_loss=True,
                     packing=False, padding_free=False, dataset_num_proc=1,
                     train_sampling_strategy="group_by_length" if group_by_length else "random",
                     gradient_checkpointing=checkpointing, activation_checkpointing=checkpointing)
    trainer = Counting(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"useful_tokens": counts["useful"], "computed_tokens": counts["computed"], "seconds": round(seconds, 2),
            "useful_tokens_per_second": round(counts["useful"] / seconds, 1)}


def harness_training(rows, steps: int, batch: int, seed: int, out: Path) -> dict:
    from harness.types import TrainingSettings
    from harness_builtins.student_transformers import Config, TransformersStudent

    student = TransformersStudent(Config(architecture=ARCH, tokenizer="word"))
    info = student.train(rows, TrainingSettings(max_steps=steps, batch_size=batch, max_length=ARCH["n_positions"],
                                                seed=seed, logging_steps=10_000),
                         out, [r.prompt + r.target for r in rows], lambda n: None)
    return {"useful_tokens": info["tokens"], "computed_tokens": info["computed_tokens"], "seconds": info["seconds"],
            "useful_tokens_per_second": info["tokens_per_second"]}


CONTENDERS = ("harness", "trainer_dynamic", "trainer_max_length", "trl_sft", "trl_sft_grouped",
              "trl_sft_grouped_no_ckpt")


def trl_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("trl") is None:
        print("note: TRL is not installed (pip install trl); its SFTTrainer rows are left out", file=sys.stderr)
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["gsm8k", "synthetic"], choices=["gsm8k", "synthetic"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS,
                        help="run only these (the others' figures are kept from the last report in --out)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "padding_efficiency.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch
    from transformers.utils import logging as hf_logging

    from harness_builtins.student_transformers import encode, train_word_tokenizer

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    data_dir = Path(os.environ.get("HARNESS_DATA_DIR", REPO.parent / "shared" / "data"))
    report = {"steps": args.steps, "batch_size": args.batch, "threads": args.threads, "model": ARCH,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}", "data": {}}
    for name in args.data:
        rows = gsm8k_rows(data_dir) if name == "gsm8k" else synthetic_rows()
        tokenizer = train_word_tokenizer([r.prompt + r.target for r in rows])
        lengths = [len(r["input_ids"]) for r in encode(tokenizer, rows, ARCH["n_positions"])]
        entry = {"rows": len(rows), "mean_length": round(sum(lengths) / len(lengths), 1), "max_length": max(lengths)}
        if args.contenders != list(CONTENDERS) and Path(args.out).is_file():  # a subset: update the last report
            previous = json.loads(Path(args.out).read_text())
            report = {**previous, "data": previous.get("data", {})}
            entry = {**report["data"].get(name, {}), **entry}
        runners = {
            "harness": lambda tmp: harness_training(rows, args.steps, args.batch, 0, tmp),
            "trainer_dynamic": lambda tmp: plain_trainer(rows, tokenizer, args.steps, args.batch, False, 0, tmp),
            "trainer_max_length": lambda tmp: plain_trainer(rows, tokenizer, args.steps, args.batch, True, 0, tmp),
            "trl_sft": lambda tmp: trl_training(rows, tokenizer, args.steps, args.batch, 0, tmp, False),
            "trl_sft_grouped": lambda tmp: trl_training(rows, tokenizer, args.steps, args.batch, 0, tmp, True),
            "trl_sft_grouped_no_ckpt": lambda tmp: trl_training(rows, tokenizer, args.steps, args.batch, 0, tmp,
                                                                True, checkpointing=False),
        }
        with tempfile.TemporaryDirectory() as tmp:
            for key in args.contenders:
                if key.startswith("trl") and not trl_available():
                    continue
                entry[key] = runners[key](Path(tmp) / key)
        base = entry["trainer_dynamic"]["useful_tokens_per_second"]
        for key in CONTENDERS:
            if key in entry:
                e = entry[key]
                e["speedup_vs_trainer_dynamic"] = round(e["useful_tokens_per_second"] / base, 2)
                e["padding_fraction"] = round(1 - e["useful_tokens"] / e["computed_tokens"], 3)
        report["data"][name] = entry
        print(f"\n{name}: {entry['rows']} rows, mean {entry['mean_length']} tokens, longest {entry['max_length']}")
        print(f"  {'contender':<20} {'useful tok/s':>12} {'seconds':>8} {'speed-up':>9} {'padding':>8}")
        for key in CONTENDERS:
            if key not in entry:
                continue
            e = entry[key]
            print(f"  {key:<20} {e['useful_tokens_per_second']:>12,.0f} {e['seconds']:>8.1f} "
                  f"{e['speedup_vs_trainer_dynamic']:>8.2f}x {100 * e['padding_fraction']:>7.1f}%")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
