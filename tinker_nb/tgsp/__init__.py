"""TGSP v1 signed model packages: build, verify (torch-free), open at the edge, export to PEFT."""

from __future__ import annotations

from .package import VerifyReport, build_package, decrypt_weights, verify_package

__all__ = ["build_package", "verify_package", "decrypt_weights", "VerifyReport", "open_package", "export_peft"]


def __getattr__(name: str):  # the edge loader imports torch: only on demand
    if name in ("open_package", "export_peft", "EdgeModel"):
        from . import edge

        return getattr(edge, name)
    raise AttributeError(name)
