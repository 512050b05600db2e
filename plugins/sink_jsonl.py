"""A JSON Lines sink: one line per evaluation (provenance, per-task metrics, where lm-eval's files are)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness import Sink, hookimpl


@dataclass(frozen=True)
class Config:
    path: str = "results/results.jsonl"


class JsonlSink(Sink):
    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def publish(self, results_file: Path, samples_files, provenance) -> list[str]:
        data = json.loads(results_file.read_text())
        line = {"date": data.get("date"), "results": data.get("results"), "n-samples": data.get("n-samples"),
                "harness": dict(provenance), "results_file": str(results_file),
                "samples_files": [str(p) for p in samples_files]}
        path = Path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
            f.flush()
        return [str(path)]


@hookimpl
def register_sinks(register):
    register("jsonl", JsonlSink)
