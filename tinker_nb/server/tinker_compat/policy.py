"""The server-side DP policy of Tinker-created models, per tenant (the SDK has no DP parameters).

The policy lives in ``<workspace>/tinker_policy.json`` (or the file named by
``$TINKER_NB_TINKER_POLICY``), read when a model is created, so an operator edits it without a
restart::

    {
      "default": {"dp": true, "noise_multiplier": 1.0, "max_grad_norm": 1.0,
                  "target_delta": 1e-5, "target_epsilon": 8.0, "batch_size": 32, "accountant": "pld"},
      "tenants": {"research": {"dp": false},
                  "clinic":   {"noise_multiplier": 2.0, "target_epsilon": 4.0}}
    }

A tenant's entry is merged over ``default``; ``default`` is merged over :data:`BUILTIN`. Without a
file every tenant trains under :data:`BUILTIN` (DP on). ``noise_multiplier`` (σ) is required under
DP: the batches are the caller's, so σ cannot be calibrated from a data set size. ``batch_size`` is the
public normaliser of the noisy gradient sum (the engine never divides by the realised batch size).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError

__all__ = ["BUILTIN", "POLICY_ENV", "POLICY_FILE", "DPPolicy", "load_policy"]

POLICY_FILE = "tinker_policy.json"
POLICY_ENV = "TINKER_NB_TINKER_POLICY"
BUILTIN: dict[str, Any] = {"dp": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0, "target_delta": 1e-5,
                           "target_epsilon": 8.0, "batch_size": 32, "accountant": "pld"}
_KEYS = set(BUILTIN) | {"device"}


@dataclass(frozen=True)
class DPPolicy:
    dp: bool
    noise_multiplier: float | None
    max_grad_norm: float
    target_delta: float
    target_epsilon: float | None
    batch_size: int
    accountant: str
    device: str | None = None
    source: str = "built-in"

    def dp_config(self):
        """The engine's DPConfig (None when the policy is off); checked by DPConfig itself."""
        from ...config import DPConfig

        if not self.dp:
            return None
        return DPConfig(noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
                        target_epsilon=self.target_epsilon, target_delta=self.target_delta,
                        accountant=self.accountant)

    def to_dict(self) -> dict:
        return asdict(self)


def _policy_path(workspace: Path) -> Path:
    env = os.environ.get(POLICY_ENV)
    return Path(env) if env else Path(workspace) / POLICY_FILE


def _check_entry(where: str, entry: Any) -> dict:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object of policy settings.")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; expected some of {sorted(_KEYS)}.")
    return entry


def load_policy(workspace: str | os.PathLike, tenant: str) -> DPPolicy:
    """The policy for ``tenant``: built-in defaults, then the file's ``default``, then its ``tenants`` entry."""
    path = _policy_path(Path(workspace))
    merged = dict(BUILTIN)
    source = "built-in"
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"the Tinker DP policy file {path} is not readable JSON ({type(exc).__name__}); "
                              "fix it (docs/TINKER_COMPAT.md).") from None
        if not isinstance(doc, dict) or set(doc) - {"default", "tenants"}:
            raise ConfigError(f"the Tinker DP policy file {path} must hold {{'default': {{...}}, 'tenants': {{...}}}}.")
        merged.update(_check_entry("policy 'default'", doc.get("default", {})))
        tenants = doc.get("tenants", {})
        if not isinstance(tenants, dict):
            raise ConfigError("policy 'tenants' must map tenant names to settings.")
        source = f"{path.name}:default"
        if tenant in tenants:
            merged.update(_check_entry(f"policy tenant {tenant!r}", tenants[tenant]))
            source = f"{path.name}:tenants.{tenant}"
    dp = merged["dp"]
    if not isinstance(dp, bool):
        raise ConfigError("policy 'dp' must be true or false.")
    bs = merged["batch_size"]
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ConfigError(f"policy 'batch_size' must be a positive integer, got {bs!r}.")
    sigma = merged["noise_multiplier"]
    if dp and (sigma is None or isinstance(sigma, bool) or not isinstance(sigma, (int, float))
               or not math.isfinite(sigma) or sigma <= 0):
        raise ConfigError("under DP the Tinker policy needs noise_multiplier > 0: the SDK's batches are the "
                          "caller's, so σ cannot be calibrated from a data set.")
    pol = DPPolicy(dp=dp, noise_multiplier=float(sigma) if sigma is not None else None,
                   max_grad_norm=float(merged["max_grad_norm"]), target_delta=float(merged["target_delta"]),
                   target_epsilon=(float(merged["target_epsilon"]) if merged["target_epsilon"] is not None else None),
                   batch_size=bs, accountant=str(merged["accountant"]), device=merged.get("device"), source=source)
    pol.dp_config()  # every value checked by the engine's own DPConfig
    return pol
