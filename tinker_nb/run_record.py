"""The run record: the one torch-free description of a training run that every artefact derives from.

It owns three formats that used to be copied between the engine and ``tgsp/``:

* the checkpoint's ``state.json`` (:func:`build_state`, :func:`read_state`, :data:`CHECKPOINT_KIND`);
* how sampling provenance and validity are described (:func:`sampling_label`);
* the audit parameters each operation is appended to the ledger with (:func:`audit_params`), which the
  package evidence proves and the verifier recomputes.

The engine writes the record; ``tgsp`` reads it; the certificate and the evidence are derived from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .errors import IntegrityError

__all__ = ["CHECKPOINT_KIND", "READABLE_KINDS", "audit_params", "build_state", "read_state", "sampling_label"]

CHECKPOINT_KIND = "tinker-nb/training-state/v2"
#: v1 checkpoints (which also carried RNG states, now ignored) still load and package.
READABLE_KINDS = ("tinker-nb/training-state/v1", CHECKPOINT_KIND)


def sampling_label(sources: Iterable[str]) -> str:
    """``poisson``, ``caller-supplied``, ``mixed (poisson and caller-supplied)`` or ``none``."""
    kinds = {s for s in sources if s in ("poisson", "caller-supplied")}
    if not kinds:
        return "none"
    if kinds == {"poisson"}:
        return "poisson"
    if kinds == {"caller-supplied"}:
        return "caller-supplied"
    return "mixed (poisson and caller-supplied)"


def build_state(*, config: dict[str, Any], trainable: list[str], step: int, privacy: dict[str, Any],
                data: dict[str, Any] | None, optimizer_groups: list[dict[str, Any]] | None,
                metrics_history: list[dict[str, Any]]) -> dict[str, Any]:
    """A checkpoint's state.json.

    ``privacy`` comes from the accountant: ``sigma``, ``sources`` (kind → steps), ``noise_fixed`` and
    ``pool`` (the data set's composition at save time: ``poisson`` history and ``gaussian_mu2``).
    ``data`` comes from the data source (digest, size). Nothing here restores ε, steps or randomness.
    """
    pool = privacy.get("composition") or {"poisson": [], "gaussian_mu2": 0.0}
    sources = sorted({k for k, n in (privacy.get("sources") or {}).items() if n and k != "none"}
                     | set(privacy.get("inherited_sources") or []))  # and those of a loaded checkpoint's steps
    return {
        "kind": CHECKPOINT_KIND,
        "config": config,
        "trainable": list(trainable),
        "step": int(step),
        "sigma": privacy.get("sigma"),
        "history": [list(h) for h in pool["poisson"]],
        "gaussian_mu2": float(pool.get("gaussian_mu2") or 0.0),
        "unprotected_steps": int(pool.get("unprotected_steps") or 0),
        "sampling_sources": sources,
        "noise_seed_fixed": bool(privacy.get("noise_fixed")),
        "pool": privacy.get("pool"),
        "dataset_sha256": (data or {}).get("dataset_sha256"),
        "dataset_size": (data or {}).get("dataset_size"),
        "optimizer": {"included": optimizer_groups is not None, "param_groups": optimizer_groups or []},
        "metrics_history": metrics_history[-2000:],
    }


def read_state(blobs: dict[str, bytes]) -> dict[str, Any]:
    """Parse and check a checkpoint's state.json (IntegrityError when missing or of an unknown kind)."""
    try:
        state = json.loads(blobs["state.json"])
    except (KeyError, ValueError, TypeError):
        raise IntegrityError("checkpoint has no readable state.json; it was not written by save_state.") from None
    if not isinstance(state, dict) or state.get("kind") not in READABLE_KINDS:
        kind = state.get("kind") if isinstance(state, dict) else None
        raise IntegrityError(f"checkpoint kind {kind!r} is not one of {READABLE_KINDS}.")
    return state


def audit_params(operation: str, **kw: Any) -> dict[str, Any]:
    """The parameters (hashed into the ledger entry) of the operations a package's evidence proves.

    * ``create_training_client``: ``config`` (TrainingConfig.to_dict());
    * ``attach_dataset``: ``dataset_sha256``, ``n``;
    * ``optim_step``: ``step`` (the client's step count after the step);
    * ``save_state``: ``artifact_id``, ``name``.
    """
    if operation == "create_training_client":
        return {"config": kw["config"]}
    if operation == "attach_dataset":
        return {"dataset_sha256": kw["dataset_sha256"], "n": int(kw["n"])}
    if operation == "optim_step":
        return {"step": int(kw["step"])}
    if operation == "save_state":
        return {"artifact_id": kw["artifact_id"], "name": kw["name"]}
    raise ValueError(f"no audit-parameter format for {operation!r}")
