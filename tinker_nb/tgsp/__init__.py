"""TGSP v1 signed model packages: build, verify (torch-free), open at the edge, export to PEFT.

Torch-free: ``verify_package``, ``inspect_package``, ``unseal_adapter``, ``build_package``,
``package_checkpoint``. ``open_package`` / ``export_peft`` (edge.py) import torch and peft on demand.
"""

from __future__ import annotations

from typing import Any

from .package import PackageReport, build_package, inspect_package, load_trust, unseal_adapter, verify_package

__all__ = [
    "EdgeModel",
    "PackageReport",
    "build_package",
    "export_peft",
    "inspect_package",
    "load_trust",
    "open_package",
    "package_checkpoint",
    "unseal_adapter",
    "verify_package",
]


def __getattr__(name: str) -> Any:
    if name in ("open_package", "export_peft", "EdgeModel"):  # the edge loader imports torch: only on demand
        from . import edge

        return getattr(edge, name)
    if name == "package_checkpoint":
        from .session import package_checkpoint

        return package_checkpoint
    raise AttributeError(f"module 'tinker_nb.tgsp' has no attribute {name!r}")
