"""Canonical JSON: sorted keys, UTF-8, separators (",", ":"), no NaN/Infinity. Used for everything hashed or signed."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical_json"]


def canonical_json(obj: Any) -> bytes:
    """Deterministic bytes for ``obj`` (raises ValueError on NaN/Infinity, TypeError on non-JSON values)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
