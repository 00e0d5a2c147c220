"""The DP certificate of a package: what was run, and ε recomputed from it at verify time (torch-free).

The certificate states the mechanism and every parameter that determines ε (σ, C, q, steps, δ, the
run-length history of (σ, q, steps)), ε under the reporting accountant and under RDP, adjacency and
sampling. The verifier recomputes both ε values from the parameters with ``tinker_nb.accounting``
(dp_accounting, no torch) and refuses a certificate whose numbers do not follow from its parameters.
"""

from __future__ import annotations

import math
from typing import Any

from .. import accounting
from ..errors import IntegrityError
from . import format as F
from .container import fail

__all__ = ["ADJACENCY", "MECHANISM", "REL_TOL", "SUBSTITUTE_TOL", "check_certificate", "make_certificate"]

MECHANISM = ("DP-SGD: per-example gradients of the LoRA parameters clipped to L2 norm C, summed, Gaussian noise "
             "of std σ·C added once per step, normalised by the expected batch size; Poisson-subsampled "
             "Gaussian mechanism composed over the steps")
ADJACENCY = "add/remove one example"
REL_TOL = 0.02  # same accountant, possibly another dp_accounting version
SUBSTITUTE_TOL = 0.05  # PRV certificates are recomputed with PLD (PRV needs torch); they agree within a few %
_E = F.CERTIFICATE


def make_certificate(*, training_config: dict[str, Any], history: list[Any], steps: int, dataset_size: int | None,
                     sampling: str, noise_seed_fixed: bool, library: str, gaussian_mu2: float = 0.0,
                     sigma: float | None = None) -> dict[str, Any]:
    """Certificate fields from a run record (a checkpoint's state.json has all of them).

    ``history`` is the data set's whole Poisson composition in the workspace (every client that trained on
    it, this run included); ``steps`` are this run's own steps; ``gaussian_mu2`` is the caller-supplied part
    (participation counting). ``epsilon`` is min(accountant, RDP), ``epsilon_accountant`` says which.
    """
    dp = training_config.get("dp_config")
    if not dp:
        return {"format": F.CERTIFICATE_FORMAT, "dp": False, "steps": int(steps), "library": library,
                "statement": "This adapter was trained WITHOUT differential privacy (dp_config=None). No privacy "
                             "guarantee of any kind is made about its training data."}
    hist = [[float(s), float(q), int(n)] for s, q, n in history]
    delta = float(dp["target_delta"])
    acct = dp.get("accountant", "pld")
    rep = accounting.report([(s, q, int(n)) for s, q, n in hist], delta=delta, accountant=acct,
                            gaussian_mu2=gaussian_mu2)
    batch = int(training_config["batch_size"])
    if sigma is None:
        sigma = hist[-1][0] if hist else dp.get("noise_multiplier")
    q = batch / dataset_size if dataset_size else (hist[-1][1] if hist else None)
    valid = sampling in ("poisson", "none") and not noise_seed_fixed and gaussian_mu2 <= 0
    notes = []
    if sampling not in ("poisson", "none") or gaussian_mu2 > 0:
        notes.append(f"batches were {sampling}: the caller-supplied steps are accounted by participation count "
                     "without amplification (μ-GDP), valid only if which steps a record takes part in does not "
                     "depend on any record's contents; the library cannot check that, so accounting_valid is false.")
    if noise_seed_fixed:
        notes.append("a noise seed was fixed by a caller (this run's, the loaded checkpoint's, or another run's on "
                     "this data set): anyone who knows it can remove that noise; the stated ε is NOT a valid "
                     "guarantee.")
    c = float(dp["max_grad_norm"])
    total_steps = sum(n for _, _, n in hist)
    statement = (f"Trained with DP-SGD for {steps} steps (noise multiplier σ={_g(sigma)}, clipping norm C={_g(c)}, "
                 f"Poisson sample rate q={_g(q)}). Counting every step any client took on this data set in the "
                 f"workspace ({total_steps} Poisson steps"
                 + (f" and caller-supplied steps with μ²={gaussian_mu2:.4g}" if gaussian_mu2 > 0 else "")
                 + f"), the released adapter satisfies ({rep.epsilon:.4g}, {delta:g})-differential privacy with "
                 f"respect to adding or removing one training example, by the {rep.accountant.upper()} accountant "
                 f"(the smaller of {acct.upper()}: {rep.epsilon_accountant:.4g} and RDP: {rep.epsilon_rdp:.4g}).")
    if not valid:
        statement += " HOWEVER, this run does not meet the accounting's assumptions: the guarantee is NOT valid."
    cert = {
        "format": F.CERTIFICATE_FORMAT, "dp": True, "mechanism": MECHANISM,
        "noise_multiplier": sigma, "max_grad_norm": c, "sample_rate": q, "expected_batch_size": batch,
        "dataset_size": dataset_size, "steps": int(steps), "history": hist, "delta": delta,
        "target_epsilon": dp.get("target_epsilon"), "epsilon": rep.epsilon, "accountant": acct,
        "epsilon_accountant": rep.accountant, "epsilon_rdp": rep.epsilon_rdp,
        "accountant_version": accounting.accountant_version(),
        "accountant_parameters": {"pld_value_discretization_interval": rep.pld_value_interval
                                  or accounting.PLD_DISCRETIZATION, "rdp_orders": list(accounting.RDP_ORDERS)},
        "adjacency": ADJACENCY, "sampling": sampling,
        "noise_seed": "fixed by a caller (this run, the checkpoint it loaded, or another run on this data set)"
                      if noise_seed_fixed else "secret (AES-256-CTR keystream, key from the OS, "
                                                                     "never stored)",
        "accounting_valid": valid, "notes": notes, "library": library, "statement": statement,
    }
    if gaussian_mu2 > 0:
        cert["gaussian_mu2"] = float(gaussian_mu2)
    return cert


def _g(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _close(stated: float, recomputed: float, tol: float) -> bool:
    if recomputed == 0:
        return stated == 0
    return abs(stated - recomputed) <= tol * recomputed


def check_certificate(cert: Any) -> dict[str, Any]:
    """Recompute ε (reporting accountant and RDP) from the certificate's parameters; IntegrityError if they differ.

    Returns a summary: dp, epsilon (stated), epsilon_recomputed, accountant used, epsilon_rdp,
    delta, accounting_valid, statement.
    """
    try:
        return _check(cert)
    except ImportError as exc:  # a missing accountant is the verifier's set-up, not the package's fault
        from ..errors import ConfigError

        raise ConfigError(f"checking the DP certificate needs the dp-accounting package ({exc}); "
                          "pip install dp-accounting (a tinker-nb dependency).") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise fail(IntegrityError, _E, f"malformed ({type(exc).__name__}).") from None


def _check(cert: Any) -> dict[str, Any]:
    if not isinstance(cert, dict) or cert.get("format") != F.CERTIFICATE_FORMAT:
        raise fail(IntegrityError, _E, f"not a {F.CERTIFICATE_FORMAT} document.")
    if not isinstance(cert.get("statement"), str) or not cert["statement"]:
        raise fail(IntegrityError, _E, "has no statement.")
    if cert.get("dp") is False:
        if "WITHOUT differential privacy" not in cert["statement"]:
            raise fail(IntegrityError, _E, "a non-DP certificate must say plainly that no guarantee is made.")
        return {"dp": False, "statement": cert["statement"], "steps": cert.get("steps")}
    if cert.get("dp") is not True:
        raise fail(IntegrityError, _E, "'dp' must be true or false.")
    try:
        hist = [(float(s), float(q), int(n)) for s, q, n in cert["history"]]
        mu2 = float(cert.get("gaussian_mu2", 0.0))
        delta, stated, stated_rdp = float(cert["delta"]), float(cert["epsilon"]), float(cert["epsilon_rdp"])
        steps, acct = int(cert["steps"]), str(cert["accountant"])
        sigma, q, c = cert["noise_multiplier"], cert["sample_rate"], float(cert["max_grad_norm"])
    except (KeyError, TypeError, ValueError):
        raise fail(IntegrityError, _E, "missing or malformed parameters (history, delta, epsilon, epsilon_rdp, "
                                       "steps, accountant, noise_multiplier, sample_rate, max_grad_norm).") from None
    if not (0 < delta < 1) or not math.isfinite(stated) or stated < 0 or not c > 0:
        raise fail(IntegrityError, _E, "delta must be in (0, 1), epsilon finite and >= 0, max_grad_norm > 0.")
    if cert.get("adjacency") != ADJACENCY:
        raise fail(IntegrityError, _E, f"adjacency must be {ADJACENCY!r} in TGSP v1.")
    if any(n <= 0 for _, _, n in hist) or not (mu2 >= 0 and math.isfinite(mu2)):
        raise fail(IntegrityError, _E, "the history has a non-positive step count or gaussian_mu2 is invalid.")
    if mu2 == 0 and sum(n for _, _, n in hist) < steps:
        raise fail(IntegrityError, _E, "the history's step counts add up to fewer than 'steps' (the data set's "
                                       "composition must include this run).")
    if steps and mu2 == 0 and not any(s == sigma and qq == q for s, qq, _ in hist):
        raise fail(IntegrityError, _E, "the history disagrees with noise_multiplier / sample_rate.")
    n, b = cert.get("dataset_size"), cert.get("expected_batch_size")
    if hist and n and b and not math.isclose(float(q), int(b) / int(n), rel_tol=1e-9):
        raise fail(IntegrityError, _E, f"sample_rate {q} is not expected_batch_size / dataset_size ({b}/{n}).")
    should_be_valid = (cert.get("sampling") in ("poisson", "none") and mu2 == 0
                       and str(cert.get("noise_seed", "")).startswith("secret"))
    if bool(cert.get("accounting_valid")) and not should_be_valid:
        raise fail(IntegrityError, _E, "claims accounting_valid although its sampling or noise seed break the "
                                       "accounting's assumptions.")
    try:
        if acct in ("pld", "rdp"):
            used, tol = acct, REL_TOL
        elif acct == "prv":
            used, tol = "pld", SUBSTITUTE_TOL
        else:
            raise fail(IntegrityError, _E, f"unknown accountant {acct!r} (TGSP v1: pld, prv, rdp).")
        recomputed = accounting.epsilon(hist, delta=delta, accountant=used, gaussian_mu2=mu2,
                                        pld_value_interval=accounting.pld_interval(hist, mu2, delta)
                                        if used == "pld" else None)
        recomputed_rdp = accounting.epsilon(hist, delta=delta, accountant="rdp", gaussian_mu2=mu2)
        # The reported ε is the smaller of the two upper bounds (certificates of tinker-nb 0.1 stated the first).
        best = min(recomputed, recomputed_rdp)
        recomputed = best if _close(stated, best, tol) or not _close(stated, recomputed, tol) else recomputed
    except (IntegrityError, ImportError):
        raise
    except Exception as exc:  # noqa: BLE001 - ConfigError from bad σ/q, numeric failures
        raise fail(IntegrityError, _E, f"its parameters cannot be accounted: {exc}") from None
    if not _close(stated, recomputed, tol):
        raise fail(IntegrityError, _E, f"states ε={stated:.6g} but its parameters give ε={recomputed:.6g} "
                                       f"({used.upper()}, tolerance {tol:.0%}).")
    if not _close(stated_rdp, recomputed_rdp, REL_TOL):
        raise fail(IntegrityError, _E, f"states RDP ε={stated_rdp:.6g} but its parameters give "
                                       f"ε={recomputed_rdp:.6g}.")
    return {"dp": True, "epsilon": stated, "epsilon_recomputed": recomputed, "recomputed_with": used,
            "accountant": acct, "epsilon_rdp": stated_rdp, "epsilon_rdp_recomputed": recomputed_rdp,
            "delta": delta, "steps": steps, "noise_multiplier": sigma, "max_grad_norm": c, "sample_rate": q,
            "accounting_valid": bool(cert.get("accounting_valid")), "statement": cert["statement"],
            "notes": list(cert.get("notes") or [])}
