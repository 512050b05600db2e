"""``harness tasks``: every registered task with its split sizes, the test questions also in train/validation,
and where its data comes from; a task that cannot load is listed with the reason, never taking the list down."""

from __future__ import annotations

import dataclasses
from typing import Any

from harness._run.registry import Registry
from harness.config import NoOptions
from harness.data import split_overlap
from harness.errors import HarnessError


def task_rows(registry: Registry, data_dir: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(registry.components["task"]):
        config_cls = getattr(registry.get("task", name).factory, "Config", NoOptions)
        takes_data_dir = "data_dir" in {f.name for f in dataclasses.fields(config_cls)}
        options = {"data_dir": data_dir} if data_dir and takes_data_dir else {}
        row: dict[str, Any] = {"task": name, "train": None, "validation": None, "test": None, "overlap": None,
                               "source": ""}
        try:
            task = registry.create("task", name, options)
            splits = task.load()
            row.update({k: len(splits.get(k, [])) for k in ("train", "validation", "test")},
                       overlap=len(split_overlap(splits)), source=task.source())
        except HarnessError as exc:
            problems = getattr(exc, "problems", None)
            row["source"] = "unavailable: " + ("; ".join(problems) if problems else exc.message)
        except Exception as exc:  # a third party's task with a bug: list the others all the same
            row["source"] = f"unavailable: {type(exc).__name__} in the task plugin: {exc}"
            row["broken"] = True
        rows.append(row)
    return rows
