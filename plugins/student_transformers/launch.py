"""Training in several processes, started by torchrun or the deepspeed launcher.

The harness's process writes a job folder and starts the launcher, which starts ``settings.processes`` copies of
the worker module (``worker.py``)::

    python -m torch.distributed.run --nproc_per_node N --master_addr 127.0.0.1 --master_port P \\
        -m harness_builtins.student_transformers.worker JOB/job.json
    python -m deepspeed.launcher.runner --num_gpus N --master_addr 127.0.0.1 --master_port P --no_local_rank \\
        --module harness_builtins.student_transformers.worker JOB/job.json

Several nodes (``training.nodes``): every node starts its own torchrun agent, node 0 from ``harness run`` and the
others from ``harness train RECIPE --node-rank K``, meeting at node 0's address (or an elastic rendezvous)::

    python -m torch.distributed.run --nproc_per_node N --nnodes M --node_rank K --master_addr HOST0 \\
        --master_port 29500 -m harness_builtins.student_transformers.worker JOB/node-K/job.json
    python -m torch.distributed.run --nproc_per_node N --nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
        --rdzv-id ID -m harness_builtins.student_transformers.worker JOB/node-K/job.json
    python -m deepspeed.launcher.runner --hostfile HOSTFILE --num_nodes M --master_addr HOST0 --master_port P \\
        --no_local_rank --module harness_builtins.student_transformers.worker JOB/job.json   # node 0 only

Each worker reads ``job.json`` (the student's config, the training settings, where to write, and where a strategy
has its own loss, the strategy (and teacher) to build it from, as ``TrainingContext.objective_source``), the training
pairs (``harness.records``: the build stage's file, or ``rows.arrow`` written for pairs held in memory) and,
when it is not the pairs' own text, ``corpus.jsonl``; rank 0 writes ``status.json`` (the step reached, for the
progress bar) and ``result.json`` (the training summary). All output goes to ``launch.log``, whose tail a failure
reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import BadInputError, RunError, TrainingContext, TrainingSettings
from harness.records import TRAINING, RecordTable, TextView, write_records

from .config import Config
from .trainer import OOM_HINT


def launch(config: Config, train, settings: TrainingSettings, out_dir: Path, corpus, progress,
           context: TrainingContext) -> dict[str, Any]:
    """Train in ``settings.processes`` processes started by torchrun or the deepspeed launcher; this process
    waits, shows their progress, and reports their log when one fails."""
    if context.validate and settings.select_every:
        raise BadInputError("training.select_every: model selection runs in a single training process; "
                            "set training.processes = 1 or training.select_every = 0")
    job = (context.checkpoint_dir or out_dir.parent / "launch")
    rank, addr, port = node_placement(settings, context)
    if settings.nodes > 1:  # each node its own job folder (the run folder is shared)
        job = job / f"node-{rank}"
    job.mkdir(parents=True, exist_ok=True)
    if isinstance(train, RecordTable):  # already a file the workers can read: no copy
        rows_file = train.path
    else:
        rows_file = job / "rows.arrow"
        write_records(rows_file, TRAINING, train)  # streamed in batches, read back the same way
    own_text = isinstance(corpus, TextView) and corpus.pairs is train  # the usual case: the rows' own text
    if not own_text:
        with (job / "corpus.jsonl").open("w") as f:
            f.writelines(json.dumps(text) + "\n" for text in corpus)
    if context.objective is not None and context.objective_source is None:
        raise BadInputError("training.processes: this strategy's loss cannot be rebuilt in launched training "
                            "processes (the context gives no objective_source); set training.processes = 1 and "
                            "training.nodes = 1")
    spec = {"config": asdict(config), "settings": asdict(settings), "out_dir": str(out_dir), "rows": str(rows_file),
            "objective": context.objective_source if context.objective is not None else None,
            "corpus": None if own_text else str(job / "corpus.jsonl"),
            "cache_dir": str(context.cache_dir) if context.cache_dir else None,
            "init_dir": str(context.init_dir) if context.init_dir else None,
            "checkpoint_dir": str(context.checkpoint_dir) if context.checkpoint_dir else None,
            "status": str(job / "status.json"), "result": str(job / "result.json")}
    (job / "job.json").write_text(json.dumps(spec))
    (job / "result.json").unlink(missing_ok=True)
    n = str(settings.processes)
    cmd = launcher_command(settings, rank, addr, port, job / "job.json")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    env.setdefault("OMP_NUM_THREADS", str(settings.threads or max(1, (os.cpu_count() or 1) // settings.processes)))
    log = job / "launch.log"
    done = 0
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            time.sleep(0.5)
            done = _advance(job / "status.json", done, progress)
    _advance(job / "status.json", done, progress)
    if proc.returncode != 0 or not (job / "result.json").exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        if "out of memory" in tail.lower() or "can't allocate memory" in tail.lower():
            raise RunError(f"training ran out of memory in a {settings.launcher} process. To fit: {OOM_HINT}. "
                           f"Log: {log}")
        if "signal 9" in tail.lower() or "sigkill" in tail.lower() or "exitcode  : -9" in tail:
            raise RunError(f"a {settings.launcher} training process was killed by the kernel (signal 9), most likely "
                           f"out of memory. To fit: {OOM_HINT}. Log: {log}")
        if rank and proc.returncode == 0:  # node N > 0: global rank 0 (on node 0) writes the result
            return {"node_rank": rank}
        raise RunError(f"{settings.launcher} training with {n} processes failed (exit {proc.returncode}); "
                       f"log: {log}\n{tail}")
    return json.loads((job / "result.json").read_text())


def node_placement(settings: TrainingSettings, context: TrainingContext) -> tuple[int, str, int]:
    """This node's rank, node 0's address and its port. One node: 127.0.0.1 and a free port. Several: the
    recipe's ``master_addr`` (else the first host of the SLURM job) and ``master_port``."""
    if settings.nodes == 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return 0, "127.0.0.1", s.getsockname()[1]
    addr = settings.master_addr or slurm_first_host(os.environ.get("SLURM_JOB_NODELIST", ""))
    if not addr and not settings.rdzv_endpoint and not settings.hostfile:
        raise BadInputError(f"training.nodes = {settings.nodes}: set training.master_addr to node 0's address (or "
                            f"training.rdzv_endpoint), or run under SLURM")
    return context.node_rank, addr, settings.master_port


def slurm_first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,09],cpu1`` -> ``gpu03``."""
    import re

    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        return ""
    prefix, ranges = m.group(1), m.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def launcher_command(settings: TrainingSettings, rank: int, addr: str, port: int, job_file: Path) -> list[str]:
    """The command that starts this node's ``settings.processes`` workers (the header shows each form)."""
    n = str(settings.processes)
    module = ["harness_builtins.student_transformers.worker", str(job_file)]
    if settings.launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", n, "--nnodes", str(settings.nodes)]
        if settings.rdzv_endpoint:  # elastic: every node the same command; ranks are given out at the rendezvous
            cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", settings.rdzv_endpoint, "--rdzv-id",
                    hashlib.sha256(str(job_file.parent.parent).encode()).hexdigest()[:12]]
        else:
            cmd += ["--node_rank", str(rank), "--master_addr", addr, "--master_port", str(port)]
        return [*cmd, "-m", *module]
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--master_addr", addr, "--master_port", str(port)]
    if settings.hostfile:  # deepspeed starts every host's processes itself (pdsh/ssh)
        cmd += ["--hostfile", settings.hostfile, "--num_nodes", str(settings.nodes)]
    else:  # --num_gpus is the process count, on CPU too
        cmd += ["--num_gpus", n]
    return [*cmd, "--no_local_rank", "--module", *module]


def _advance(status: Path, done: int, progress) -> int:
    """Move the progress bar to the step a launched rank 0 last reported."""
    try:
        step = int(json.loads(status.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return done
    if step > done:
        progress(step - done)
        return step
    return done
