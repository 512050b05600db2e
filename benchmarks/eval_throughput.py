"""Evaluation throughput: the harness's evaluation (hf backend, and vLLM where it is installed) against the stock
``lm_eval`` CLI (its default batch size of 1, and batched), on the same trained students and the same written
lm-eval task, with the predictions compared.

Each contender is timed as the whole command a user would run, process start-up included (at this model size
start-up is most of the cost: imports and lazy loading take about 10 s):
- ``cli_default``: ``lm_eval --model hf --model_args pretrained=<model> --include_path <task dir> --tasks <task>``
  once per student, the CLI's defaults (batch size 1);
- ``cli_batched``: the same with ``--batch_size 32``;
- ``harness_hf``: ``harness run <recipe> --from evaluate``: every student of the run evaluated in one process;
- ``harness_vllm``: the same with ``evaluation.backend = "vllm"`` (each student served by vLLM's CPU build from its
  own virtualenv, server start-up included).

Needs a finished quickstart run (``harness run recipes/quickstart.toml``): its students and task files are copied
to a temporary folder, so the run itself is left as it was. Target: the harness at least 3x ``cli_default``.
Prints the table and writes JSON.

    python benchmarks/eval_throughput.py [--run runs/quickstart] [--recipe recipes/quickstart.toml]
        [--vllm-python .vllm-venv/bin/python] [--out benchmarks/results/eval_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(argv: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-3000:]}")
    return seconds


def predictions(folder: Path) -> dict[int, list]:
    (path,) = sorted(folder.rglob("samples_*.jsonl"))[-1:]
    return {s["doc_id"]: s["resps"] for s in map(json.loads, path.read_text().splitlines())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(REPO / "runs" / "quickstart"))
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "quickstart.toml"))
    parser.add_argument("--vllm-python", default=os.environ.get("HARNESS_VLLM_PYTHON",
                                                                str(REPO / ".vllm-venv" / "bin" / "python")))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "eval_throughput.json"))
    args = parser.parse_args()
    run = Path(args.run).resolve()
    evaluations = sorted(run.glob("evaluate-*/metrics.json"))
    if not evaluations:
        raise SystemExit(f"{run}: no finished evaluation; run `harness run {args.recipe}` first")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "run": str(run), "contenders": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shutil.copytree(run, tmp / "runs" / run.name, symlinks=True)
        students = {}
        for metrics_file in evaluations:
            m = json.loads(metrics_file.read_text())
            name = metrics_file.parent.name.removeprefix("evaluate-")
            model = tmp / "runs" / run.name / f"train-{name}" / "model"
            students[name] = {"model": model, "task": m["task"], "task_dir": Path(m["task_dir"]), "n": m["n"]}
        questions = sum(s["n"] for s in students.values())
        report["students"] = {k: {"task": v["task"], "questions": v["n"]} for k, v in students.items()}

        def cli(label: str, extra: list[str]) -> None:
            seconds, preds = 0.0, {}
            for name, s in students.items():
                out = tmp / label / name
                seconds += timed([str(BIN / "lm_eval"), "--model", "hf", "--model_args",
                                  f"pretrained={s['model']},dtype=float32", "--tasks", s["task"],
                                  "--include_path", str(s["task_dir"]), "--device", "cpu", "--output_path", str(out),
                                  "--log_samples", *extra], tmp, env)
                preds[name] = predictions(out)
            report["contenders"][label] = {"seconds": round(seconds, 1), "_preds": preds}
            print(f"{label}: {seconds:.1f} s", flush=True)

        def harness(label: str, sets: list[str]) -> None:
            argv = [str(BIN / "harness"), "run", args.recipe, "--from", "evaluate", "--set",
                    f"run.output_dir={json.dumps(str(tmp / 'runs'))}", *sets]
            seconds = timed(argv, tmp, env)
            preds = {name: predictions(tmp / "runs" / run.name / f"evaluate-{name}" / "lm_eval") for name in students}
            report["contenders"][label] = {"seconds": round(seconds, 1), "_preds": preds}
            print(f"{label}: {seconds:.1f} s", flush=True)

        harness("harness_hf", [])
        cli("cli_default", [])
        cli("cli_batched", ["--batch_size", "32"])
        if Path(args.vllm_python).is_file():
            command = (f"{args.vllm_python} -m vllm.entrypoints.openai.api_server --model {{model}} --host 127.0.0.1 "
                       "--port {port} --max-model-len 256 --dtype float32 --enforce-eager")
            harness("harness_vllm", ["--set", 'evaluation.backend="vllm"', "--set",
                                     f"evaluation.serve={json.dumps(command)}"])
        else:
            print(f"note: no vLLM at {args.vllm_python}; its row is left out", file=sys.stderr)

    reference = report["contenders"]["harness_hf"]["_preds"]
    base = report["contenders"]["cli_default"]["seconds"]
    print(f"\n{questions} questions ({len(students)} students)")
    print(f"  {'contender':<14} {'seconds':>8} {'questions/s':>12} {'vs cli_default':>15} "
          f"{'predictions differing':>22}")
    for label, entry in report["contenders"].items():
        preds = entry.pop("_preds")
        differ = sum(preds[name][doc] != reference[name][doc] for name in reference for doc in reference[name])
        entry.update(questions_per_second=round(questions / entry["seconds"], 1),
                     speedup_vs_cli_default=round(base / entry["seconds"], 2), predictions_differing=differ)
        print(f"  {label:<14} {entry['seconds']:>8.1f} {entry['questions_per_second']:>12.1f} "
              f"{entry['speedup_vs_cli_default']:>14.2f}x {differ:>22}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
