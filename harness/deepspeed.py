"""DeepSpeed configuration from the recipe's single set of training knobs.

The harness builds a config whose sizes, optimizer and precision are ``"auto"``: the transformers integration fills
them from the training arguments, which come from ``[training]``. A recipe may instead name its own JSON file
(``training.deepspeed_config``); its ``"auto"`` values are filled the same way, and a value that contradicts the
recipe is reported as a recipe error before anything runs (rather than as a mismatch deep inside training).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.types import TrainingSettings


def build_config(settings: TrainingSettings) -> dict[str, Any]:
    """The config for ``training.deepspeed_stage`` (and ``deepspeed_offload``), every size ``"auto"``."""
    zero: dict[str, Any] = {"stage": settings.deepspeed_stage}
    if settings.deepspeed_offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    if settings.deepspeed_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero,
        # torch's AdamW: no DeepSpeed op to compile, also with optimizer offload.
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                   "weight_decay": "auto", "torch_adam": True}},
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": "auto"},
    }


def _recipe_values(settings: TrainingSettings) -> dict[tuple[str, ...], tuple[Any, str]]:
    """DeepSpeed config paths -> (the value the recipe implies, the recipe key that sets it)."""
    return {
        ("train_batch_size",): (settings.batch_size, "training.batch_size"),
        ("train_micro_batch_size_per_gpu",): (settings.per_device_batch(), "training.micro_batch_size"),
        ("gradient_accumulation_steps",): (settings.accumulation(),
                                           "training.batch_size / (micro_batch_size x processes)"),
        ("gradient_clipping",): (settings.max_grad_norm, "training.max_grad_norm"),
        ("optimizer", "params", "lr"): (settings.learning_rate, "training.learning_rate"),
        ("optimizer", "params", "weight_decay"): (settings.weight_decay, "training.weight_decay"),
        ("bf16", "enabled"): (settings.bf16, "training.bf16"),
    }


def load_config(path: Path, settings: TrainingSettings) -> tuple[dict[str, Any] | None, list[str]]:
    """Read a user's DeepSpeed JSON; return it and the problems (unreadable, or values contradicting the recipe)."""
    where = f"training.deepspeed_config: {path}"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None, [f"{where}: no such file"]
    except (OSError, json.JSONDecodeError) as exc:
        return None, [f"{where}: not valid JSON ({exc})"]
    if not isinstance(config, dict):
        return None, [f"{where}: expected a JSON object at the top level"]
    problems = []
    for keys, (expected, recipe_key) in _recipe_values(settings).items():
        node: Any = config
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node is None or node == "auto":
            continue
        if node != expected and not (isinstance(node, (int, float)) and isinstance(expected, (int, float))
                                     and abs(node - expected) <= 1e-12 * max(1.0, abs(expected))):
            problems.append(f"{where}: {'.'.join(keys)} = {json.dumps(node)} but {recipe_key} gives "
                            f"{json.dumps(expected)}; set it to \"auto\" (filled from the recipe) or change the "
                            f"recipe to match")
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config.get("zero_optimization"),
                                                                            dict) else None
    if stage is not None and stage not in (0, 1, 2, 3):
        problems.append(f"{where}: zero_optimization.stage = {json.dumps(stage)}; ZeRO stages are 0, 1, 2 and 3")
    return config, problems


def zero_stage(config: dict[str, Any] | None) -> int | None:
    if config is None:
        return None
    zero = config.get("zero_optimization")
    return int(zero.get("stage", 0)) if isinstance(zero, dict) else 0
