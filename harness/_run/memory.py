"""Per-stage peak memory: this process, the processes it started, and the GPU."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def reset_peak_memory() -> None:
    """Start a stage's memory peak afresh: Linux resets the process's peak RSS (VmHWM) on request; CUDA's peak
    allocation counter is reset too when torch has a GPU."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not permitted: the peak stays the process's since start
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, float]:
    """The stage's peak memory in MiB: this process's resident set (``peak_rss_mb``), the largest process it
    started so far, e.g. launched training processes (``peak_child_rss_mb``), and GPU memory
    (``peak_gpu_mb``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        status = Path("/proc/self/status").read_text()
        rss = next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        pass
    out = {"peak_rss_mb": round(rss, 1)}
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if children:
        out["peak_child_rss_mb"] = round(children, 1)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
