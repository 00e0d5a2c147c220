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

__version__ = "0.1.0"

__all__ = [
    "ServiceClient", "TrainingClient", "TrainingConfig", "LoRAConfig", "DPConfig",
    "TinkerError", "ConfigError", "DataError", "StateError", "BudgetExceededError", "IntegrityError",
    "KeyAccessError", "SignatureError", "PackageError", "TrustError", "__version__",
]


def __getattr__(name: str):  # lazy: importing tinker_nb must not import torch (verifiers stay light)
    if name in ("ServiceClient", "TrainingClient"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'tinker_nb' has no attribute {name!r}")


def load_ipython_extension(ipython):  # %load_ext tinker_nb
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)
