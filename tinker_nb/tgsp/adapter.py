"""Adapter weights as safetensors bytes, handled without torch: validate, describe, rename to PEFT names.

safetensors layout: 8-byte little-endian header length N ‖ N bytes of JSON header (may be padded
with spaces) ‖ data. The header maps tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the data section) plus an optional ``"__metadata__"`` of strings.

A checkpoint stores the trainable parameters under their module names
(``…q_proj.lora_A.default.weight``); a PEFT adapter file uses the names of
``peft.get_peft_model_state_dict`` (adapter name removed: ``…q_proj.lora_A.weight``). TGSP packages
carry the PEFT names, so ``adapter_model.safetensors`` can be written out unchanged.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from ..errors import IntegrityError

__all__ = ["MAX_HEADER", "describe", "parse_header", "to_peft_names"]

MAX_HEADER = 100 << 20
_DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def parse_header(data: bytes, *, what: str = "adapter") -> tuple[dict[str, Any], int]:
    """(header dict, data start offset); IntegrityError unless the file is well-formed and fully covered."""
    if len(data) < 8:
        raise IntegrityError(f"{what}: not a safetensors file (too short).")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise IntegrityError(f"{what}: not a safetensors file (bad header length).")
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{what}: safetensors header is not JSON.") from None
    if not isinstance(header, dict):
        raise IntegrityError(f"{what}: safetensors header is not an object.")
    body = len(data) - 8 - n
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (b, e) = t["dtype"], t["shape"], t["data_offsets"]
            count = 1
            for d in shape:
                count *= int(d)
        except (KeyError, TypeError, ValueError):
            raise IntegrityError(f"{what}: tensor {name!r} has a malformed header entry.") from None
        if dtype not in _DTYPE_SIZES or not 0 <= b <= e <= body or e - b != count * _DTYPE_SIZES[dtype]:
            raise IntegrityError(f"{what}: tensor {name!r} has an inconsistent dtype, shape or offsets.")
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            raise IntegrityError(f"{what}: tensor data overlaps or leaves gaps.")
        pos = e
    if pos != body:
        raise IntegrityError(f"{what}: trailing bytes after the last tensor.")
    return header, 8 + n


def describe(data: bytes) -> dict[str, dict[str, Any]]:
    """``{tensor name: {"dtype", "shape"}}`` of a safetensors file."""
    header, _ = parse_header(data)
    return {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in sorted(header.items())
            if k != "__metadata__"}


def to_peft_names(data: bytes, *, adapter_name: str = "default") -> bytes:
    """Rename checkpoint tensors to PEFT adapter names (as ``get_peft_model_state_dict`` does).

    Only LoRA tensors (``lora_A``/``lora_B``) are accepted: base-model weights never go into a package.
    The data section is kept byte for byte; ``__metadata__`` becomes ``{"format": "pt"}``.
    """
    header, start = parse_header(data, what="checkpoint adapter")
    out: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if ".lora_A." not in name and ".lora_B." not in name:
            raise IntegrityError(f"checkpoint adapter: tensor {name!r} is not a LoRA weight; refusing to package it.")
        new = name.replace(f".{adapter_name}", "")
        if new in out:
            raise IntegrityError(f"checkpoint adapter: two tensors map to {new!r}.")
        out[new] = t
    head = json.dumps(out, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data[start:]
