"""The DP certificate of a package: what was run, and ε recomputed from it at verify time (torch-free)."""

from __future__ import annotations

from typing import Any

from .. import accounting
from ..errors import IntegrityError

__all__ = ["make_certificate", "check_certificate"]


def make_certificate(metrics: Any, *, history: list, library_version: str) -> dict[str, Any]:
    """Certificate fields from a session's DPMetrics and accountant history."""
    if not metrics.dp_enabled:
        return {"format": "tgsp/v1/dp-certificate", "dp": False,
                "statement": "This adapter was trained WITHOUT differential privacy. No privacy guarantee is made "
                             "about the training data."}
    eps_rdp = accounting.epsilon(history, delta=metrics.delta, accountant="rdp")
    return {
        "format": "tgsp/v1/dp-certificate", "dp": True,
        "mechanism": "DP-SGD: per-example clipping (flat, L2) + Gaussian noise, Poisson-subsampled Gaussian mechanism",
        "noise_multiplier": metrics.noise_multiplier, "max_grad_norm": metrics.max_grad_norm,
        "sample_rate": metrics.sample_rate, "expected_batch_size": metrics.expected_batch_size,
        "steps": metrics.steps, "history": [[float(s), float(q), int(n)] for s, q, n in history],
        "delta": metrics.delta, "epsilon": metrics.epsilon_spent, "epsilon_rdp": eps_rdp,
        "accountant": metrics.accountant, "accountant_version": accounting.accountant_version(),
        "adjacency": "add/remove one example", "sampling": metrics.sampling,
        "accounting_valid": metrics.accounting_valid, "notes": list(metrics.notes),
        "library": library_version,
        "statement": (f"Trained with DP-SGD for {metrics.steps} steps (σ={metrics.noise_multiplier:.4g}, "
                      f"C={metrics.max_grad_norm:g}, q={metrics.sample_rate:.4g}); the released adapter satisfies "
                      f"({metrics.epsilon_spent:.3f}, {metrics.delta:g})-differential privacy with respect to adding "
                      f"or removing one training example ({metrics.accountant.upper()} accountant)"
                      + ("." if metrics.accounting_valid else
                         ", BUT the run's sampling or noise seed does not meet the assumptions: not a valid guarantee.")),
    }


def check_certificate(cert: dict[str, Any], *, rel_tol: float = 0.02) -> dict[str, Any]:
    """Recompute ε from the certificate's own parameters; IntegrityError if the stated ε is understated."""
    if not cert.get("dp"):
        return {"dp": False}
    try:
        hist = [(float(s), float(q), int(n)) for s, q, n in cert["history"]]
        delta = float(cert["delta"])
        stated = float(cert["epsilon"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("dp_certificate.json: missing or malformed parameters.") from None
    if sum(n for _, _, n in hist) != int(cert.get("steps", -1)):
        raise IntegrityError("dp_certificate.json: the history's steps do not add up to 'steps'.")
    acct = cert.get("accountant") if cert.get("accountant") in ("pld", "rdp") else "pld"
    recomputed = accounting.epsilon(hist, delta=delta, accountant=acct)
    if stated + 1e-9 < recomputed * (1 - rel_tol):
        raise IntegrityError(f"dp_certificate.json: stated ε={stated:.4g} but its parameters give "
                             f"ε={recomputed:.4g} ({acct}).")
    return {"dp": True, "epsilon_stated": stated, "epsilon_recomputed": recomputed, "accountant": acct,
            "accounting_valid": bool(cert.get("accounting_valid"))}
