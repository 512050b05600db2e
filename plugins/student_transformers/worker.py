"""One training process started by ``launch`` (torchrun or the DeepSpeed launcher runs
``python -m harness_builtins.student_transformers.worker JOB/job.json`` once per rank): read the job, train, and on
rank 0 write the progress (``status.json``) and the training summary (``result.json``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness import TrainingContext, TrainingSettings
from harness.components import build_objective
from harness.io import atomic_write_json, read_jsonl
from harness.records import TRAINING, RecordTable, TextView

from .config import Config
from .student import TransformersStudent


def main(job_file: str) -> None:
    """One launched training process (torchrun / deepspeed launcher): train, and on rank 0 report progress and
    the result."""
    job = json.loads(Path(job_file).read_text())
    rank0 = int(os.environ.get("RANK", "0")) == 0
    settings = TrainingSettings(**job["settings"])

    student = TransformersStudent(Config(**job["config"]))
    rows = RecordTable(Path(job["rows"]), TRAINING)
    corpus = TextView(rows) if job.get("corpus") is None else [d for d in read_jsonl(Path(job["corpus"]))]
    step = [0]

    def progress(n: int) -> None:
        step[0] += n
        if rank0:
            atomic_write_json(Path(job["status"]), {"step": step[0]}, durable=False)  # every step: no fsync

    checkpoint_dir = Path(job["checkpoint_dir"]) if job["checkpoint_dir"] else None
    source = job.get("objective")
    objective = build_objective(source) if source else None  # the strategy's own loss, built here as in the parent
    try:
        info = student.train(rows, settings, Path(job["out_dir"]), corpus, progress,
                             TrainingContext(checkpoint_dir=checkpoint_dir, objective=objective,
                                             objective_source=source,
                                             init_dir=Path(job["init_dir"]) if job.get("init_dir") else None,
                                             cache_dir=Path(job["cache_dir"]) if job.get("cache_dir") else None))
    finally:
        if objective is not None:
            objective.close()
    if rank0:
        atomic_write_json(Path(job["result"]), info)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # leave together, once every rank is done
        dist.barrier()
        dist.destroy_process_group()
    # Skip the interpreter's teardown: destroying gloo's threads there sometimes aborts a rank ("terminate
    # called without an active exception") after its work is done, and the launcher then fails the whole run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
