"""Load a causal LM and its tokenizer, and put LoRA adapters on it (peft)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from ..config import LoRAConfig
from ..errors import ConfigError

__all__ = [
    "BASE_DTYPE_ENV",
    "LoadedModel",
    "add_lora",
    "load_base_model",
    "pick_device",
    "resolve_base_dtype",
    "resolve_model_ref",
]

# Until TrainingConfig carries the base-weight dtype, this environment variable selects it (see resolve_base_dtype).
BASE_DTYPE_ENV = "TINKER_NB_BASE_DTYPE"
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_base_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """The dtype of the frozen base weights: an explicit dtype/name, else ``$TINKER_NB_BASE_DTYPE``, else float32.

    ``"auto"`` means bfloat16 on a CUDA device that supports it and float32 elsewhere. Only the frozen
    base weights take this dtype: LoRA parameters, per-example gradients, clipping, noise and the
    optimizer state stay float32 (:func:`add_lora`, :mod:`.dp`).
    """
    if dtype is None:
        dtype = os.environ.get(BASE_DTYPE_ENV) or "float32"
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ConfigError(f"base dtype {dtype} is not supported; use float32, bfloat16 or float16.")
        return dtype
    name = str(dtype).strip().lower().removeprefix("torch.")
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"base dtype {dtype!r} is not one of float32, bfloat16, float16 or auto "
                          f"(from the argument or ${BASE_DTYPE_ENV}).")
    return _DTYPES[name]


def resolve_model_ref(ref: str) -> str:
    """Map the embedded default name to its shipped folder; pass other refs through."""
    from .assets import resolve_model_ref as _resolve

    return _resolve(ref)


def pick_device(requested: str | None) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} was requested but CUDA is not available; use device=None or 'cpu'.")
    return dev


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any  # a transformers tokenizer
    path: str
    max_positions: int
    vocab_size: int


def load_base_model(model_ref: str, *, device: torch.device, dtype: torch.dtype | str | None = None) -> LoadedModel:
    """Load weights and tokenizer from the embedded model, a local folder or the local HF cache.

    Hub ids are resolved offline first (``local_files_only``); a clear ConfigError says what to do if
    the model is not available locally. ``dtype`` is the base weights' dtype (:func:`resolve_base_dtype`:
    argument, else ``$TINKER_NB_BASE_DTYPE``, else float32).
    """
    dtype = resolve_base_dtype(dtype, torch.device(device))
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_model_ref(model_ref)
    local_only = Path(path).is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=local_only)
    except OSError as exc:
        raise ConfigError(
            f"could not load model {model_ref!r}: {exc.__class__.__name__}. Give a local checkpoint folder, "
            "a hub id already in the Hugging Face cache, or the embedded 'tinker-nb/tiny-llama'."
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.config.use_cache = False
    # Trap (opacus#820): move to the device BEFORE get_peft_model, or hooks/optimizer hold stale params.
    model.to(device)  # type: ignore[arg-type]  # transformers types .to() by its own wrapper
    max_pos = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 10**9
    vocab = int(cast(torch.nn.Embedding, model.get_input_embeddings()).num_embeddings)
    return LoadedModel(model=model, tokenizer=tok, path=path, max_positions=max_pos, vocab_size=vocab)


def add_lora(model: torch.nn.Module, lora: LoRAConfig, *, seed: int) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters; only adapter weights are trainable. Init is seeded."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in lora.target_modules if m not in names]
    if missing:
        raise ConfigError(
            f"LoRA target_modules {missing} are not in this model; available linear layers include "
            f"{sorted(n for n in names if n.endswith('proj'))[:12]}."
        )
    cfg = PeftLoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,  # type: ignore[arg-type]  # peft takes floats
        target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft reads the attribute transformers 5 renamed; the warning is theirs, not the user's.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, cfg, autocast_adapter_dtype=True)
    # Mixed precision: whatever the base weights' dtype, the trainable adapter is float32 (peft upcasts
    # bf16/fp16 adapters already; this also covers other dtypes), so per-example gradients, clipping,
    # noise and the optimizer state are float32. peft casts the LoRA branch's input to the adapter dtype.
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return peft_model
