"""Where the embedded default model lives (torch-free)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_REF = "tinker-nb/tiny-llama"
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-llama"


def resolve_model_ref(ref: str) -> str:
    """Map ``tinker-nb/tiny-llama`` to the shipped folder; local folders and hub ids pass through."""
    if ref == DEFAULT_MODEL_REF:
        return str(ASSET_DIR)
    return ref
