"""Shared helpers: timing statistics, machine description, synthetic batches, tiny model configs."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def stats(samples: list[float]) -> dict[str, Any]:
    s = sorted(samples)
    n = len(s)
    return {"n": n, "median": statistics.median(s), "p50": statistics.median(s),
            "p95": s[min(n - 1, int(round(0.95 * (n - 1))))], "min": s[0], "max": s[-1], "samples": samples}


def ratio(a: dict, b: dict) -> float:
    return a["median"] / b["median"] if b["median"] else float("nan")


def timeit(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    for pkg in ("transformers", "peft", "opacus", "cryptography", "dp-accounting", "tinker-nb"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    return info


def build_llama(path: Path, *, hidden: int, layers: int, heads: int, vocab: int, max_pos: int,
                tokenizer_from: str) -> str:
    """A randomly initialised Llama of the given size, with the embedded model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (path / "config.json").exists():
        return str(path)
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    tok.save_pretrained(path)
    cfg = LlamaConfig(vocab_size=max(vocab, len(tok)), hidden_size=hidden, intermediate_size=int(hidden * 8 / 3) // 64 * 64 or hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_pos, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return str(path)


def synthetic_batch(*, batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
