"""What a published result records about how it was made (lm-eval's results file, key ``harness``)."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict
from typing import Any

from harness._run.recipe import Recipe


def provenance(recipe: Recipe, manifest: dict[str, Any], run_name: str, eval_key: str,
               train_records: list[dict[str, Any]], teacher_report: dict[str, Any],
               teacher_usage: dict[str, Any], hub_dataset: str | None,
               evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a published result records about how it was made (lm-eval's results file, key ``harness``):
    ``evaluation`` is how the student was evaluated (backend, device, dtype, samples, temperature, seed...)."""
    r = recipe
    strategy_name, _, student_name = run_name.partition("+")
    strategy = next(s for s in r.strategies if s.name == strategy_name)
    student = next(s for s in r.students if s.name == student_name) if student_name else r.students[0]
    parameters = sum(rec.get("parameters") or 0 for rec in train_records)
    return {"run_name": run_name, "recipe": r.name, "recipe_hash": r.digest(), "evaluation_key": eval_key,
            "task": {"name": r.task.kind, "hub_dataset": hub_dataset, **r.task.plain()},
            "teacher": {"name": r.teacher.name, **r.teacher.plain(),
                        **({"placement": teacher_usage["placement"]} if teacher_usage.get("placement") else {})},
            "strategy": {"name": strategy.name, **strategy.plain()},
            "student": {"name": student.name, **student.plain()}, "student_parameters": parameters or None,
            "teacher_accuracy": teacher_report.get("teacher_accuracy"),
            "teacher_cost": teacher_usage.get("cost") or None,
            "plugins": {"task": dict(r.task.code), "teacher": dict(r.teacher.code), "strategy": dict(strategy.code),
                        "student": dict(student.code)},
            "training": asdict(r.training), "evaluation": evaluation or {}, "git_commit": manifest.get("git_commit"),
            "versions": manifest.get("versions"), "machine": machine_facts()}


def machine_facts() -> dict[str, Any]:
    """What numerics depend on beyond the versions: the processor, core count, torch's threads and device."""
    facts: dict[str, Any] = {"platform": platform.platform(), "processor": platform.machine(),
                             "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None:
        facts["torch_threads"] = torch.get_num_threads()
        facts["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return facts
