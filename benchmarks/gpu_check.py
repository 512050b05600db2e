"""The GPU check (run by benchmarks/gpu_check.sh): on one H100/H200, in a few minutes,
(a) training throughput of a GPT-2-small-size student (124M parameters, built from its config) through the
    harness's transformers student, bf16, without and with DeepSpeed ZeRO-2: useful tokens per second and model
    FLOPs utilisation (target >= 35%);
(b) evaluation throughput of the quickstart's students on the GPU (hf backend, the harness's evaluate stage),
    against the CPU figure in benchmarks/results/eval_throughput.json.
Writes one JSON file. ``--dry-run`` runs the same code on the CPU with a tiny model and a few steps (it checks the
script, not the machine).

    python benchmarks/gpu_check.py [--dry-run] [--out FILE] [--steps 40] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPT2_SMALL = {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024,
              "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
TINY = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
"""Dense bf16 peak FLOP/s from the vendors' data sheets (SXM parts)."""


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def rows(length: int, count: int, seed: int):
    """Rows of exactly ``length`` tokens with the word tokenizer (numbers, one token each; EOS closes each): no
    padding, so every position trained on is useful."""
    from harness.types import TrainingExample

    rng = random.Random(seed)
    return [TrainingExample(f"r{i}", "", " ".join(str(rng.randrange(100)) for _ in range(length - 1)))
            for i in range(count)]


def train(arch: dict, steps: int, batch: int, length: int, bf16: bool, zero: int | None, out: Path) -> dict:
    from harness.types import TrainingSettings
    from harness_builtins.student_transformers import Config, TransformersStudent

    data = rows(length, steps * batch, 0)
    stamps: list[float] = []
    student = TransformersStudent(Config(architecture=arch, tokenizer="word"))
    info = student.train(data, TrainingSettings(max_steps=steps, batch_size=batch, max_length=length, bf16=bf16,
                                                deepspeed_stage=zero, learning_rate=3e-4, warmup_ratio=0.0,
                                                logging_steps=10_000, seed=0),
                         out, [r.target for r in data[:64]], lambda n: stamps.append(time.perf_counter()))
    params = info["parameters"]
    skip = min(5, max(1, steps // 4))  # CUDA start-up, allocator warm-up and kernel selection in the first steps
    steady = (stamps[-1] - stamps[skip - 1]) if len(stamps) > skip else info["seconds"]
    tokens_per_step = batch * length
    per_second = tokens_per_step * (len(stamps) - skip) / steady if len(stamps) > skip else info["tokens_per_second"]
    # model FLOPs per token: 6N for the weights, 12 * layers * length * width for attention (forward + backward)
    flops_per_token = 6 * params + 12 * arch["n_layer"] * length * arch["n_embd"]
    return {"parameters": params, "steps": info["steps"], "batch": batch, "length": length, "bf16": bf16,
            "zero_stage": zero, "seconds": info["seconds"], "useful_tokens_per_second": round(per_second, 1),
            "model_flops_per_second": round(per_second * flops_per_token, 1), "_flops_per_token": flops_per_token}


def evaluation(dry_run: bool, env: dict) -> dict:
    """The quickstart's evaluate stage on this machine's default device (the GPU when there is one)."""
    run = REPO / "runs" / "quickstart"
    if not list(run.glob("evaluate-*/metrics.json")):
        return {"skipped": f"no finished quickstart run in {run} (run `harness run recipes/quickstart.toml` "
                           f"first, and carry runs/quickstart to the GPU machine)"}
    cpu = REPO / "benchmarks" / "results" / "eval_throughput.json"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shutil.copytree(run, tmp / "runs" / "quickstart", symlinks=True)
        sets = ["--set", f"run.output_dir={json.dumps(str(tmp / 'runs'))}"]
        if dry_run:
            sets += ["--set", "evaluation.limit=20"]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(REPO / "recipes" / "quickstart.toml"),
                               "--from", "evaluate", *sets], cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            return {"failed": done.stderr[-2000:]}
        metrics = [json.loads(p.read_text())
                   for p in sorted((tmp / "runs" / "quickstart").glob("evaluate-*/metrics.json"))]
    questions = sum(m["n"] for m in metrics)
    out = {"seconds": round(seconds, 1), "questions": questions, "questions_per_second": round(questions / seconds, 1),
           "accuracy": {m["task"]: m["acc"] for m in metrics}, "evaluation": metrics[0].get("evaluation")}
    if cpu.is_file():
        cpu_hf = json.loads(cpu.read_text())["contenders"].get("harness_hf", {})
        if cpu_hf.get("questions_per_second"):
            out["cpu_questions_per_second"] = cpu_hf["questions_per_second"]
            out["speedup_vs_cpu"] = round(out["questions_per_second"] / cpu_hf["questions_per_second"], 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="on the CPU with a tiny model and a few steps")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", help="default: benchmarks/results/gpu_check.json (a dry run: a temporary file, "
                                      "never mistaken for a measurement)")
    args = parser.parse_args()
    if not args.out:
        args.out = str(Path(tempfile.gettempdir()) / "gpu_check_dry_run.json") if args.dry_run else \
            str(REPO / "benchmarks" / "results" / "gpu_check.json")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    os.environ.update({k: env[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TQDM_DISABLE")})
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    gpu = torch.cuda.is_available()
    if not gpu and not args.dry_run:
        raise SystemExit("no CUDA GPU here: run with --dry-run to check the script on the CPU")
    name = torch.cuda.get_device_name(0) if gpu else platform.processor() or platform.machine()
    arch, steps, batch, length = (TINY, 3, 2, 64) if args.dry_run else (GPT2_SMALL, args.steps, args.batch, 1024)
    bf16 = gpu and torch.cuda.is_bf16_supported()
    report: dict = {"device": name, "dry_run": args.dry_run, "torch": torch.__version__, "training": {}}
    peak = peak_flops(name) if gpu else None
    with tempfile.TemporaryDirectory() as tmp:
        for label, zero in (("no_zero", None), ("zero2", 2)):
            started = time.perf_counter()
            entry = train(arch, steps, batch, length, bf16, zero, Path(tmp) / label)
            flops_per_token = entry.pop("_flops_per_token")
            entry["mfu"] = round(entry["model_flops_per_second"] / peak, 3) if peak else None
            entry["wall_seconds"] = round(time.perf_counter() - started, 1)
            report["training"][label] = entry
            print(f"training {label:<8} {'bf16' if bf16 else 'fp32'} "
                  f"{entry['useful_tokens_per_second']:>12,.0f} tokens/s"
                  + (f"  MFU {100 * entry['mfu']:.1f}% of {peak / 1e12:.0f} TFLOP/s" if peak else "")
                  + f"  ({entry['parameters'] / 1e6:.1f}M parameters, {flops_per_token / 1e6:.0f} MFLOP/token)",
                  flush=True)
    report["evaluation"] = evaluation(args.dry_run, env)
    print("evaluation", json.dumps(report["evaluation"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
