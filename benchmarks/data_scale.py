"""Data at scale: seconds, peak memory and bytes on disk per stage as the data grows, and tokenization throughput
against the peer a user would pick.

The run: the synthetic task with N training questions, the program teacher sampling 4 rationales per question
(temperature 1.0), diverse reasoning (D = 4), a 2-layer GPT-2 trained for 20 steps, evaluation on 50 test
questions; each size is one ``harness run`` in its own process (so peak memory is that process's, stage by
stage, as the run's manifest records it). Sizes: 10k, 100k and 1M questions (40k, 400k, 4M rationales), and a
long-trace case: 5,000 questions x 4 rationales padded to 4,000 words each (``teacher.trace_words``: 20,000
traces of about 4,000 tokens with the word tokenizer, R1-style lengths).

Tokenization (also on its own: ``--tokenization-only RUN_FOLDER``): the 100k run's training pairs
(``build-diverse_reasoning/train.arrow``) with its trained tokenizer, encoded by the harness (``TokenStore``:
chunks in 2 worker processes, written to disk) and by ``datasets.map(batched=True, num_proc=2)`` preparing the
same rows as TRL's SFT trainer does for prompt-completion data (prompt and completion tokenized, ``input_ids`` +
``completion_mask``), each in a fresh process; pairs per second and peak memory.

Growth exponents: ``log(x_1M / x_100k) / log(10)`` per stage for time and peak memory (1: linear, 0: flat).

    python benchmarks/data_scale.py [--sizes 10000 100000 1000000] [--long 5000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_STAGES = ("task", "teach", "filter", "build-diverse_reasoning")


def recipe(n: int, trace_words: int = 0, max_length: int = 256) -> str:
    return f"""
[run]
name = "scale"
seed = 0

[task]
kind = "synthetic_arithmetic"
train_size = {n}
validation_size = 200
test_size = 300

[teacher]
kind = "program"
samples = 4
temperature = 1.0
trace_words = {trace_words}

[[strategy]]
kind = "diverse_reasoning"
samples = 4

[[student]]
kind = "transformers"
tokenizer = "word"
architecture = {{ model_type = "gpt2", n_layer = 2, n_embd = 128, n_head = 4, n_positions = {max_length} }}

[training]
max_steps = 20
batch_size = 32
max_length = {max_length}
threads = 2

[evaluation]
limit = 50
batch_size = 50
max_gen_toks = 64
"""


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_size(work: Path, label: str, n: int, trace_words: int = 0) -> dict:
    folder = work / label
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "r.toml").write_text(recipe(n, trace_words, 512 if trace_words else 256))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HARNESS_CACHE_DIR": str(folder / "cache")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(folder / "r.toml"), "--set",
                           f'run.output_dir="{folder / "runs"}"', "--set", "sink.kind=local", "--set",
                           f'sink.dir="{folder / "results"}"'], env=env, capture_output=True, text=True,
                          cwd=folder)
    wall = time.perf_counter() - started
    out: dict = {"questions": n, "rationales": 4 * n, "trace_words": trace_words, "wall_seconds": round(wall, 1),
                 "exit_code": done.returncode}
    if done.returncode != 0:
        out["error"] = (done.stderr or done.stdout)[-3000:]
        print(f"{label}: exit {done.returncode}\n{out['error']}", file=sys.stderr)
    run = folder / "runs" / "scale"
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {}
    out["stages"] = {name: {"seconds": s.get("seconds"), "peak_rss_mb": s.get("peak_rss_mb"),
                            "peak_child_rss_mb": s.get("peak_child_rss_mb"), "bytes": du(run / name)}
                     for name, s in manifest.get("stages", {}).items()}
    out["data_stage_seconds"] = round(sum(out["stages"].get(s, {}).get("seconds") or 0 for s in DATA_STAGES), 1)
    out["peak_rss_mb"] = max((s["peak_rss_mb"] or 0 for s in out["stages"].values()), default=None)
    out["token_cache_bytes"] = du(run / "cache")
    return out


TOKENIZE = r"""
import json, resource, sys, tempfile, time
from pathlib import Path


def main():
    mode, train, model = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    scratch = Path(tempfile.mkdtemp(dir=sys.argv[4]))  # a fresh folder each run: nothing reused
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model))
    started = time.perf_counter()
    if mode == "harness":
        from harness.records import TRAINING, RecordTable
        from harness_builtins.student_transformers.tokens import build_store
        table = RecordTable(train, TRAINING)
        store = build_store(table, tok, 256, False, None, scratch / "store", processes=2)
        rows, tokens = len(store), int(store.lengths.sum())
    else:  # datasets.map as TRL's SFTTrainer prepares prompt-completion rows
        import datasets
        import pyarrow as pa
        datasets.disable_progress_bars()
        ds = datasets.Dataset(pa.ipc.open_file(pa.memory_map(str(train))).read_all())  # memory-mapped, no copy
        eos = tok.eos_token
        def tokenize(batch):
            prompts = tok(batch["prompt"], add_special_tokens=False)["input_ids"]
            texts = [p + c + eos for p, c in zip(batch["prompt"], batch["target"])]
            full = tok(texts, add_special_tokens=False)["input_ids"]
            masks = [([0] * len(p) + [1] * (len(f) - len(p)))[:256] for p, f in zip(prompts, full)]
            return {"input_ids": [f[:256] for f in full], "completion_mask": masks}
        out = ds.map(tokenize, batched=True, num_proc=2, remove_columns=ds.column_names,
                     cache_file_name=str(scratch / "mapped.arrow"))
        rows = len(out)
        tokens = sum(len(x) for batch in out.iter(batch_size=10000) for x in batch["input_ids"])
    seconds = time.perf_counter() - started
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "tokens": tokens, "seconds": round(seconds, 2),
                      "rows_per_second": round(rows / seconds), "tokens_per_second": round(tokens / seconds),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "peak_worker_rss_mb": round(kids, 1)}))


if __name__ == "__main__":  # the harness's worker processes are spawned: they import this module
    main()
"""


def tokenization(work: Path, run: Path) -> dict:
    train = run / "build-diverse_reasoning" / "train.arrow"
    model = run / "train-diverse_reasoning" / "model"
    out = {}
    for mode in ("harness", "datasets_map"):
        scratch = Path(tempfile.mkdtemp(dir=work))
        done = subprocess.run([sys.executable, "-c", TOKENIZE, mode, str(train), str(model), str(scratch)],
                              capture_output=True, text=True, env={**os.environ, "HF_DATASETS_OFFLINE": "1",
                                                                   "HF_HUB_OFFLINE": "1"})
        shutil.rmtree(scratch, ignore_errors=True)
        if done.returncode != 0:
            out[mode] = {"error": done.stderr[-2000:]}
            continue
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    if "rows_per_second" in out.get("harness", {}) and "rows_per_second" in out.get("datasets_map", {}):
        out["harness_vs_datasets_map"] = round(out["harness"]["rows_per_second"]
                                               / out["datasets_map"]["rows_per_second"], 2)
    return out


def growth(small: dict, big: dict, factor: float) -> dict:
    out = {}
    for stage, s in big["stages"].items():
        b = small["stages"].get(stage)
        if not b:
            continue
        entry = {}
        if s["seconds"] and b["seconds"]:
            entry["time"] = round(math.log(s["seconds"] / b["seconds"]) / math.log(factor), 2)
        if s["peak_rss_mb"] and b["peak_rss_mb"]:
            entry["memory"] = round(math.log(s["peak_rss_mb"] / b["peak_rss_mb"]) / math.log(factor), 2)
            entry["memory_ratio"] = round(s["peak_rss_mb"] / b["peak_rss_mb"], 2)
        out[stage] = entry
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--long", type=int, default=5_000, help="questions of the long-trace case (0: skip)")
    p.add_argument("--long-words", type=int, default=4_000)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data_scale.json"))
    p.add_argument("--tokenization-only", metavar="RUN", help="only compare tokenization on a finished run folder, "
                   "updating the JSON's tokenization entry")
    args = p.parse_args()
    if args.tokenization_only:
        out = Path(args.out)
        report = json.loads(out.read_text()) if out.exists() else {}
        scratch = Path(tempfile.mkdtemp(prefix="data-scale-"))
        report["tokenization"] = tokenization(scratch, Path(args.tokenization_only))
        shutil.rmtree(scratch, ignore_errors=True)
        print(json.dumps(report["tokenization"], indent=2))
        out.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="data-scale-"))
    report: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "python": platform.python_version()}, "runs": {}}
    for n in args.sizes:
        label = str(n) if n < 1000 else f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        print(f"running {label} ({n:,} questions, {4 * n:,} rationales) ...", flush=True)
        report["runs"][label] = r = run_size(work, label, n)
        print(f"  {label}: data stages {r['data_stage_seconds']} s, peak RSS {r['peak_rss_mb']} MB, "
              f"wall {r['wall_seconds']} s, exit {r['exit_code']}", flush=True)
        if n == 100_000 and r["exit_code"] == 0:
            report["tokenization"] = tokenization(work, work / label / "runs" / "scale")
            print(f"  tokenization: {json.dumps(report['tokenization'])}", flush=True)
        if label != "100k" and n != 100_000:
            shutil.rmtree(work / label / "runs", ignore_errors=True)  # keep the disk free for the next size
    if args.long:
        print(f"running the long-trace case ({args.long:,} questions x 4 traces of {args.long_words:,} words) ...",
              flush=True)
        report["runs"]["long"] = r = run_size(work, "long", args.long, args.long_words)
        print(f"  long: data stages {r['data_stage_seconds']} s, peak RSS {r['peak_rss_mb']} MB, "
              f"wall {r['wall_seconds']} s, exit {r['exit_code']}", flush=True)
    runs = report["runs"]
    if "100k" in runs and "1M" in runs:
        report["growth_100k_to_1M"] = growth(runs["100k"], runs["1M"], 10)
    print()
    stages = sorted({s for r in runs.values() for s in r["stages"]}, key=lambda s: (
        ["task", "teach", "filter", "build", "train", "evaluate", "publish"].index(s.split("-")[0]), s))
    print(f"{'stage':<26}" + "".join(f"{label:>22}" for label in runs))
    for stage in stages:
        cells = []
        for r in runs.values():
            s = r["stages"].get(stage)
            cells.append(f"{s['seconds']:>8.1f} s {s['peak_rss_mb'] / 1024:>6.2f} GiB" if s else f"{'-':>22}")
        print(f"{stage:<26}" + "".join(f"{c:>22}" for c in cells))
    print(f"{'task+teach+filter+build':<26}" + "".join(f"{r['data_stage_seconds']:>20.1f} s" for r in runs.values()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
