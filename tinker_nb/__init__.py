"""tinker_nb: differentially private LoRA fine-tuning in your notebook."""

from __future__ import annotations

from .config import DPConfig, LoRAConfig, TrainingConfig
from .errors import (
    BudgetExceededError,
    ConfigError,
    DataError,
    IntegrityError,
    KeyAccessError,
    PackageError,
    SignatureError,
    StateError,
    TinkerError,
    TrustError,
)
from .workspace import Workspace

__version__ = "0.2.0"  # the one place the version lives (pyproject reads it)

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "DPConfig",
    "DataError",
    "IntegrityError",
    "KeyAccessError",
    "LoRAConfig",
    "PackageError",
    "ServiceClient",
    "SignatureError",
    "StateError",
    "TinkerError",
    "TrainingClient",
    "TrainingConfig",
    "TrustError",
    "Workspace",
    "__version__",
]


def __getattr__(name: str):  # lazy: importing tinker_nb must not import torch (verifiers stay light)
    if name in ("ServiceClient", "TrainingClient"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'tinker_nb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython):  # %load_ext tinker_nb
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)
