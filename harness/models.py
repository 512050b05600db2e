"""Checks that a model a recipe names can be loaded, made before any stage runs (``preflight``), so that a typo
in a path, a hub id that is not cached offline or a bad architecture table fails in ``harness validate`` rather
than after the teacher was paid. Nothing here loads weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

Problems = list[tuple[str, str]]



def is_encoder_decoder(model: Any) -> bool:
    """Whether a model is an encoder-decoder (T5-style). ``model``: a model, its config, or a model folder (its
    ``config.json`` read; nothing loaded). A folder without a readable config counts as decoder-only."""
    if isinstance(model, (str, Path)):
        try:
            return bool(json.loads((Path(model) / "config.json").read_text()).get("is_encoder_decoder"))
        except (OSError, ValueError):
            return False
    return bool(getattr(getattr(model, "config", model), "is_encoder_decoder", False))

def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(line.strip() for line in text.splitlines()[:2])[:300] if text else type(exc).__name__


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json", "adapter_model.safetensors", "tf_model.h5", "flax_model.msgpack")


def has_weights(folder: Path) -> bool:
    """Whether a model folder holds weights (one file, a sharded index, or a LoRA adapter)."""
    return any((folder / f).is_file() for f in WEIGHT_FILES) or any(folder.glob("*.safetensors"))


def model_problems(name: str, key: str = "model", tokenizer: bool = True, config: bool = True,
                   weights: bool = True) -> Problems:
    """Problems with a model named by a local folder or a hub id: the folder must exist and hold a model
    (``config.json`` and weights); a hub id must give its config (and tokenizer) now, which offline means: it is
    cached. ``config = False`` checks only a tokenizer."""
    if not name:
        return []
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            return [(key, f"'{name}' is a file; give the folder that holds the model (config.json, weights)")]
        if config and not (path / "config.json").is_file():
            return [(key, f"folder '{name}' is not a model folder: it has no config.json")]
        if config and weights and not has_weights(path):
            return [(key, f"folder '{name}' has a config but no weights (model.safetensors, pytorch_model.bin or "
                          f"their sharded index); a copy cut short? Copy the whole model folder")]
    elif _looks_like_path(name):
        return [(key, f"folder '{name}' does not exist")]
    try:
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if config:
            AutoConfig.from_pretrained(str(path) if path.exists() else name)
        if tokenizer:
            AutoTokenizer.from_pretrained(str(path) if path.exists() else name)
    except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load"
        offline = (" (HF_HUB_OFFLINE is set: only local folders and models already in the Hugging Face cache "
                   "load; download it first or point to a local folder)") if os.environ.get("HF_HUB_OFFLINE") else ""
        return [(key, f"cannot load '{name}'{offline}: {_first_line(exc)}")]
    return []


def architecture_problems(architecture: dict[str, Any], key: str = "architecture") -> Problems:
    """Build the model config a from-scratch ``architecture`` table describes (no weights): unknown model types,
    wrongly typed or inconsistent fields are problems naming the table."""
    if not architecture:
        return []
    arch = dict(architecture)
    model_type = arch.pop("model_type", None)
    if not isinstance(model_type, str):
        return [(f"{key}.model_type", "needs a model type, e.g. model_type = \"gpt2\"")]
    problems = []
    for field in ("n_layer", "num_hidden_layers", "num_layers", "n_embd", "hidden_size", "d_model", "n_head",
                  "num_attention_heads", "num_heads", "n_positions", "max_position_embeddings", "vocab_size"):
        if field in arch and (isinstance(arch[field], bool) or not isinstance(arch[field], int) or arch[field] < 1):
            problems.append((f"{key}.{field}", f"must be a whole number of at least 1, got {arch[field]!r}"))
    if problems:
        return problems
    try:
        from transformers import AutoConfig

        config = AutoConfig.for_model(model_type, **arch)
    except Exception as exc:
        return [(key, f"cannot build a '{model_type}' config: {_first_line(exc)}")]
    for field in arch:
        if not hasattr(config, field):
            problems.append((f"{key}.{field}", f"not a field of the '{model_type}' config"))
    if not problems:
        try:  # the consistency checks a model runs on construction (e.g. width divisible by heads)
            _check_shapes(model_type, config)
        except ValueError as exc:
            problems.append((key, _first_line(exc)))
    return problems


def _check_shapes(model_type: str, config: Any) -> None:
    width = next((getattr(config, f) for f in ("n_embd", "hidden_size", "d_model") if hasattr(config, f)), None)
    heads = next((getattr(config, f) for f in ("n_head", "num_attention_heads", "num_heads") if hasattr(config, f)),
                 None)
    if isinstance(width, int) and isinstance(heads, int) and heads and model_type != "t5" and width % heads:
        raise ValueError(f"the width ({width}) must be divisible by the number of attention heads ({heads})")


def vocabulary_hash(tokenizer: Any) -> str:
    """A short hash of a tokenizer's vocabulary (token -> id) and special tokens: equal hashes mean token ids
    mean the same thing in both, as token-level distillation needs."""
    import hashlib
    import json

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = {k: getattr(tokenizer, k, None) for k in ("eos_token_id", "pad_token_id", "bos_token_id")}
    return hashlib.sha256(json.dumps([vocab, special], ensure_ascii=False).encode()).hexdigest()[:16]


def tokenizer_vocabulary(name: str) -> str | None:
    """``vocabulary_hash`` of the tokenizer in a folder or hub id; None when it cannot be loaded."""
    if not name:
        return None
    try:
        from transformers import AutoTokenizer

        return vocabulary_hash(AutoTokenizer.from_pretrained(name))
    except Exception:  # reported by model_problems, which names the cause
        return None


# Placement -------------------------------------------------------------------------------------------------

DTYPES = ("auto", "float32", "bfloat16", "float16")

def resolve_device(device: str = "auto") -> str:
    """``auto``: ``cuda`` when torch sees a GPU, ``mps`` on Apple silicon, else ``cpu``. A GPU asked for by name
    that torch cannot see is a ``BadInputError``."""
    import torch

    from harness.errors import BadInputError

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"device '{device}': torch sees no CUDA GPU here (torch {torch.__version__}); use "
                            f"device = \"auto\" or \"cpu\"")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: ``bfloat16`` on a CUDA GPU that supports it, else ``float32`` (bfloat16 on CPUs is slower than
    float32 for these models, measured: 8.8k vs 10.2k tokens/s)."""
    if dtype != "auto":
        return dtype
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def place(model: Any, device: str = "auto", dtype: str = "auto") -> dict[str, str]:
    """Move ``model`` (in place) to the device and dtype asked for, resolved as above; return where it ended up
    (``{"device": "cuda:0", "dtype": "bfloat16"}``), read back from its parameters."""
    import torch

    where = resolve_device(device)
    model.to(device=where, dtype=getattr(torch, resolve_dtype(dtype, where)))
    first = next(model.parameters())
    return {"device": str(first.device), "dtype": str(first.dtype).removeprefix("torch.")}
