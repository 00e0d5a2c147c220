"""Empirical privacy auditing: canaries, one training run, and an ε lower bound beside the reported ε.

``stats`` and ``canaries`` are torch-free; the runner (``audit_privacy``, ``PrivacyAudit``) trains through
the public client API and is imported lazily. See docs/PRIVACY_AUDIT.md.
"""

from __future__ import annotations

from .canaries import Canary, CanarySet, SealedCoins
from .stats import (
    OneRunBound,
    auc,
    ceiling_epsilon,
    epsilon_lower_bound,
    exposure_extrapolation,
    exposure_interpolation,
    one_run_audit,
    one_run_p_value,
    roc,
    tpr_at_fpr,
)

__all__ = [
    "Canary",
    "CanarySet",
    "OneRunBound",
    "PrivacyAudit",
    "PrivacyAuditResult",
    "SealedCoins",
    "auc",
    "audit_privacy",
    "ceiling_epsilon",
    "epsilon_lower_bound",
    "exposure_extrapolation",
    "exposure_interpolation",
    "one_run_audit",
    "one_run_p_value",
    "roc",
    "tpr_at_fpr",
]

_LAZY = {"audit_privacy", "PrivacyAudit", "PrivacyAuditResult"}


def __getattr__(name: str):  # the runner imports the client (and, through it, torch) only when used
    if name in _LAZY:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'tinker_nb.privacy_audit' has no attribute {name!r}")
