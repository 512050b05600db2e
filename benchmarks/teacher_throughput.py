"""Teacher throughput: the openai teacher against a local OpenAI-compatible server with a fixed latency.

Starts tests/fake_openai.py in its own process (100 ms per request, no faults), runs Zero-shot-CoT for 1,000
questions (2,000 requests: rationale, then answer) at concurrency 32, and compares the wall time with the ideal
2000 x 0.1 s / 32 = 6.25 s (target: at most 1.25x). Then runs again on the warm cache (target: 0 requests,
under 2 s). Prints the figures and writes them as JSON.

    python benchmarks/teacher_throughput.py [--out benchmarks/results/teacher_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "teacher_throughput.json"))
    args = parser.parse_args()

    from harness_builtins.task_synthetic import Config as TaskConfig
    from harness_builtins.task_synthetic import SyntheticArithmetic
    from harness_builtins.teacher_openai import Config, OpenAITeacher

    task = SyntheticArithmetic(TaskConfig(train_size=args.questions, validation_size=0, test_size=1))
    examples = task.load()["train"]
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        server = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_openai.py"), "--latency",
                                   str(args.latency), "--port-file", str(port_file)], stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):
                if port_file.exists() and port_file.read_text():
                    break
                time.sleep(0.05)
            port = int(port_file.read_text())
            config = Config(model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env="",
                            concurrency=args.concurrency, cache_dir=tmp)
            cold = OpenAITeacher(config)
            started = time.perf_counter()
            first = cold.generate(examples, task, lambda n: None)
            cold_s = time.perf_counter() - started
            warm = OpenAITeacher(config)
            started = time.perf_counter()
            second = warm.generate(examples, task, lambda n: None)
            warm_s = time.perf_counter() - started
            served = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats").read())
        finally:
            server.terminate()
            server.wait(10)
    requests = cold.usage().requests
    ideal = requests * args.latency / args.concurrency
    result = {
        "requests": requests, "concurrency": args.concurrency, "latency_s": args.latency,
        "seconds": round(cold_s, 3), "ideal_seconds": round(ideal, 3), "ratio_to_ideal": round(cold_s / ideal, 3),
        "requests_per_second": round(requests / cold_s, 1), "target_ratio": 1.25,
        "cached_rerun_seconds": round(warm_s, 3), "cached_rerun_requests": warm.usage().requests,
        "cached_rerun_identical": first == second, "server_requests_total": served["requests"],
        "machine": f"{platform.machine()}, {platform.python_version()}", "date": time.strftime("%Y-%m-%d"),
    }
    print(f"{requests} requests at concurrency {args.concurrency}, {args.latency * 1000:.0f} ms each: "
          f"{cold_s:.2f} s (ideal {ideal:.2f} s, {cold_s / ideal:.2f}x; target <= 1.25x)")
    print(f"cached re-run: {warm.usage().requests} requests, {warm_s:.2f} s (target 0 requests, < 2 s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    ok = cold_s / ideal <= 1.25 and warm.usage().requests == 0 and warm_s < 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
