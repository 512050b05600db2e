"""What stages read from one another beyond their keys: a digest of a stage's output, the teacher generations a
strategy may train on, and the size of the token-level signals recorded beside them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness.types import GradedGeneration


def file_digest(path: Path) -> str:
    """A short content hash of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def usable_generations(graded: dict[str, list[GradedGeneration]]) -> tuple[dict[str, list[GradedGeneration]], int]:
    """Teacher generations a strategy may train on: failed requests (``meta["error"]``) and empty ones (no
    rationale, no answer, no steps) never are, whatever the filter says. Returns them and how many were left out."""
    usable, left_out = {}, 0
    for example_id, gens in graded.items():
        keep = [g for g in gens if not g.generation.meta.get("error") and (
            g.generation.rationale.strip() or g.generation.answer_text.strip() or g.generation.steps)]
        left_out += len(gens) - len(keep)
        usable[example_id] = keep
    return usable, left_out


def signal_bytes_per_token(samples: list[list[Any]]) -> float | None:
    """Bytes of JSON per teacher token that token-level signals take beside the text; None without signals."""
    size = tokens = 0
    for gens in samples:
        for g in gens:
            signals = g.meta.get("signals")
            if signals and signals.get("target_ids"):
                size += len(json.dumps(signals))
                tokens += len(signals["target_ids"])
    return size / tokens if tokens else None
