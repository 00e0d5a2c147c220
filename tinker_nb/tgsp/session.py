"""Build a package from a live training client or from a saved checkpoint (engine side)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PackageError
from .package import build_package

__all__ = ["package_session", "package_checkpoint", "model_digests"]


def _file_sha(p: Path) -> str | None:
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_digests(model_path: str) -> tuple[dict, str | None]:
    """SHA-256 of the base weights (model.safetensors) and of tokenizer.json in a local model folder."""
    p = Path(model_path)
    return {"sha256": _file_sha(p / "model.safetensors")}, _file_sha(p / "tokenizer.json")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("tinker-nb", "torch", "transformers", "peft", "opacus", "cryptography", "dp-accounting"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _evidence(tc: Any, state: dict, *, source_checkpoint: str | None) -> dict:
    s = tc._session
    led = tc.service.ledger
    cp = led.checkpoint()
    ops = [e for e in led.entries() if e.operation in ("create_training_client", "attach_dataset", "save_state")]
    ops += [e for e in led.entries() if e.operation == "optim_step"][-1:]
    proofs = [{"seq": e.seq, "operation": e.operation, "record_hash": e.record_hash,
               **{k: v for k, v in led.inclusion_proof(e.seq, tree_size=cp.size).items() if k != "seq"}}
              for e in ops if e.seq < cp.size]
    return {
        "format": "tgsp/v1/evidence",
        "dataset": {"sha256": state.get("dataset_sha256"), "size": state.get("dataset_size"),
                    "note": "digest of the tokenised records; the data itself is never included"},
        "training_config": state["config"], "steps": state["step"],
        "seeds": {"lora_init_seed": state["config"]["seed"],
                  "noise_and_sampling": "fixed by caller (not secret)" if state.get("noise_seed_fixed")
                  else "secret, drawn from the OS; stored only in encrypted checkpoints"},
        "library_versions": _versions(), "source_checkpoint": source_checkpoint,
        "audit": {"checkpoint": cp.to_dict(), "inclusion_proofs": proofs},
        "sampling": sorted(state.get("sampling_sources", [])) or ["none"],
    }


def _certificate(tc: Any) -> dict:
    from .. import __version__
    from .certificate import make_certificate

    s = tc._session
    return make_certificate(s.dp_metrics(), history=list(s.history), library_version=f"tinker-nb {__version__}")


def _signer(tc: Any, signer: Any):
    if signer is not None:
        return signer
    from ..security.identity import workspace_signer

    return workspace_signer(tc.service.workspace, tc.service.keystore)


def _recipients(recipients: Any) -> list:
    from ..security.kem import load_recipient

    if not recipients:
        raise PackageError("give at least one recipient: recipients=[RecipientIdentity.public_key(), ...].")
    return [load_recipient(r) for r in recipients]


def package_session(tc: Any, path: str | os.PathLike, *, recipients: Any, signer: Any = None,
                    expires_in_days: float = 365.0) -> dict:
    """Package the client's current adapter (runs on the client's worker thread)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save as st_save

    from ..engine.checkpoint import read_state, session_to_blobs

    s = tc._session
    s._check_open()
    if expires_in_days <= 0:
        raise ConfigError("expires_in_days must be > 0.")
    adapter = st_save({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(s.model).items()})
    state = read_state(session_to_blobs(s, include_optimizer=False))
    base, tok_sha = model_digests(s.model_path)
    manifest = build_package(
        path, adapter=adapter, base_model={"ref": s.config.model_ref, **base},
        lora_config=s.config.lora_config.to_dict(), tokenizer_sha256=tok_sha,
        evidence=_evidence(tc, state, source_checkpoint=None), certificate=_certificate(tc),
        signer=_signer(tc, signer), recipients=_recipients(recipients), expires_in_days=expires_in_days)
    tc.service.audit("package", {"package_id": manifest["package_id"]},
                     {"package_id": manifest["package_id"], "recipients": len(recipients), "step": s.steps})
    return manifest


def package_checkpoint(tc: Any, artifact_id: str, path: str | os.PathLike, *, recipients: Any, signer: Any = None,
                       expires_in_days: float = 365.0) -> dict:
    """Package the adapter stored in a saved checkpoint (loaded into ``tc`` first, then packaged)."""
    tc.load_state(artifact_id)
    return tc._worker.call("package", package_session, tc, path, recipients=recipients, signer=signer,
                           expires_in_days=expires_in_days)


_ = json
