"""The default result sink: lm-eval's files copied into a local results directory, never overwritten.

``<dir>/<recipe>/<recipe>__<run>/results_<time>.json`` keeps lm-eval's schema and gains one top-level key,
``harness``, with the run's provenance (lm-eval readers ignore keys they do not know); the per-sample
``samples_<task>_<time>.jsonl`` files are copied unchanged.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import Sink, hookimpl
from harness.io import atomic_write_text


@dataclass(frozen=True)
class Config:
    dir: str = "results"
    """Results directory, relative to the current directory unless absolute."""


def _free(path: Path) -> Path:
    """``path``, or ``path`` with a ``-N`` suffix when a file of that name exists already."""
    candidate, n = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


class LocalSink(Sink):
    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def publish(self, results_file: Path, samples_files, provenance) -> list[str]:
        target = Path(self.config.dir) / provenance["recipe"] / f"{provenance['recipe']}__{provenance['run_name']}"
        target.mkdir(parents=True, exist_ok=True)
        data = json.loads(results_file.read_text())
        data["harness"] = dict(provenance)
        out = _free(target / results_file.name)
        atomic_write_text(out, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        written = [str(out)]
        for sample in samples_files:
            dest = _free(target / sample.name)
            shutil.copyfile(sample, dest)
            written.append(str(dest))
        return written


@hookimpl
def register_sinks(register):
    register("local", LocalSink)
