"""Build a package from a live training client or from a saved checkpoint.

Both paths go through the same checkpoint blobs (``adapter.safetensors`` + ``state.json``), so a
package made from a session and one made later from its saved checkpoint carry the same adapter
bytes, certificate parameters and evidence bindings — except that the certificate always counts what
the workspace's odometer holds for the data set when the package is built (other clients may have
charged it since the save). ``package_checkpoint`` never imports torch.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..canonical import canonical_json
from ..errors import ConfigError, IntegrityError, KeyAccessError, PackageError
from ..run_record import read_state, sampling_label
from .adapter import to_peft_names
from .certificate import make_certificate
from .evidence import collect_evidence

if TYPE_CHECKING:
    from ..security.signing import HybridSigner

__all__ = ["file_sha256", "model_digests", "package_checkpoint", "package_session", "resolve_base_model"]

def file_sha256(p: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_base_model(ref: str) -> Path | None:
    """The local folder of a model ref: the embedded model, a folder, or a hub id already in the HF cache."""
    from ..engine.assets import resolve_model_ref

    p = Path(resolve_model_ref(ref))
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached / not a hub id / hub not installed
        return None


def model_digests(ref: str) -> tuple[dict[str, Any], str | None]:
    """(``base_model`` manifest field, SHA-256 of tokenizer.json) for a model ref.

    ``base_model = {"ref", "weights": {file name: SHA-256} for every *.safetensors file of the folder}``;
    ``weights`` is empty when the model is not available as a local folder.
    """
    folder = resolve_base_model(ref)
    if folder is None:
        return {"ref": ref, "weights": {}}, None
    weights = {p.name: file_sha256(p) for p in sorted(folder.glob("*.safetensors"))}
    tok = folder / "tokenizer.json"
    return {"ref": ref, "weights": weights}, (file_sha256(tok) if tok.is_file() else None)


def _signer(service: Any, signer: Any) -> HybridSigner:
    from ..security.signing import HybridSigner

    if signer is None:
        from ..security.identity import workspace_signer

        return service.workspace.signer if hasattr(service.workspace, "signer") else \
            workspace_signer(service.workspace, service.keystore)
    if not isinstance(signer, HybridSigner):
        raise ConfigError("signer must be a HybridSigner (load one with tinker_nb.security.signing.load_signer).")
    return signer


def _recipients(recipients: Any) -> list[Any]:
    from ..security.kem import load_recipient

    if recipients is None or isinstance(recipients, (str, bytes, dict)) or not hasattr(recipients, "__iter__"):
        recipients = [recipients] if recipients is not None else []
    out = []
    for r in recipients:
        try:
            out.append(load_recipient(r))
        except KeyAccessError as exc:
            raise ConfigError(f"bad recipient: {exc}") from None
    if not out:
        raise ConfigError("give at least one recipient: recipients=[RecipientIdentity.public_key(), 'alice.pub', …].")
    return out


def _check_out(path: Any, expires_in_days: Any) -> Path:
    out = Path(path)
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: folder {out.parent} does not exist.")
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give a file path such as model.tgsp.")
    if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, (int, float)) \
            or not 0 < expires_in_days <= 36600:
        raise ConfigError(f"expires_in_days must be a number in (0, 36600], got {expires_in_days!r}.")
    return out


def _library() -> str:
    from .. import __version__

    return f"tinker-nb {__version__}"


def _with_current_pool(service: Any, state: dict[str, Any]) -> dict[str, Any]:
    """The run record with its data set's composition as the workspace's odometer holds it *now*.

    A checkpoint's record holds the pool as it was at save time; a package built later certifies "every step
    any client took on this data set", so it takes what was charged since (more steps, steps without DP, a
    caller-fixed noise seed). Charges only grow: each part is the larger of the two.
    """
    pool = state.get("pool")
    if not pool or not (state.get("config") or {}).get("dp_config"):
        return state
    try:
        odometer = service.odometer
        # a pool named the older, order-sensitive way: its charges were carried over to the order-free pool
        comps = [odometer.composition(service.tenant, p) for p in (pool, *odometer.successors(service.tenant, pool))]
    except (AttributeError, ConfigError):  # a service without a local odometer: the record as saved
        return state
    runs: dict[tuple[float, float], int] = {}
    for part in (state.get("history") or [], *(c.poisson for c in comps)):
        for sigma, q, n in part:
            key = (float(sigma), float(q))
            runs[key] = max(runs.get(key, 0), int(n))
    out = dict(state)
    out["history"] = [[sg, q, n] for (sg, q), n in sorted(runs.items())]
    out["gaussian_mu2"] = max([float(state.get("gaussian_mu2") or 0.0), *(c.gaussian_mu2 for c in comps)])
    out["unprotected_steps"] = max([int(state.get("unprotected_steps") or 0), *(c.unprotected_steps for c in comps)])
    out["noise_seed_fixed"] = bool(state.get("noise_seed_fixed")) or any(c.noise_known_clients for c in comps)
    return out


def _build(service: Any, blobs: dict[str, bytes], out: Path, *, recipients: list[Any], signer: Any,
           expires_in_days: float, source: dict[str, Any] | None) -> dict[str, Any]:
    """Package checkpoint blobs; the ledger gets a ``package`` entry before the file appears at ``out``."""
    from .package import build_package

    try:
        state = read_state(blobs)
        adapter_raw = blobs["adapter.safetensors"]
    except (KeyError, IntegrityError) as exc:
        raise PackageError(f"the checkpoint has no readable state.json / adapter.safetensors ({exc}).") from None
    cfg = state["config"]
    state = _with_current_pool(service, state)
    if cfg.get("dp_config") and int(state.get("unprotected_steps") or 0):
        raise PackageError(f"this data set was also trained on WITHOUT differential privacy in the workspace "
                           f"({state['unprotected_steps']} steps by a client with dp_config=None), so no finite ε holds "
                           "and no DP certificate can be issued. Nothing was written.")
    adapter = to_peft_names(adapter_raw)
    sampling = sampling_label(state.get("sampling_sources") or [])
    library = _library()
    cert = make_certificate(training_config=cfg, history=state.get("history") or [], steps=int(state.get("step") or 0),
                            dataset_size=state.get("dataset_size"), sampling=sampling,
                            noise_seed_fixed=bool(state.get("noise_seed_fixed")), library=library,
                            gaussian_mu2=float(state.get("gaussian_mu2") or 0.0), sigma=state.get("sigma"))
    evidence = collect_evidence(service.ledger, state=state, source=source, library=library)
    base, tok_sha = model_digests(cfg["model_ref"])
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.building")
    try:
        manifest = build_package(tmp, adapter=adapter, base_model=base, lora_config=cfg["lora_config"],
                                 tokenizer_sha256=tok_sha, evidence=evidence, certificate=cert,
                                 signer=signer, recipients=recipients, expires_in_days=expires_in_days)
        msha = hashlib.sha256(canonical_json(manifest)).hexdigest()
        service.audit("package", {"package_id": manifest["package_id"], "manifest_sha256": msha},
                      {"package_id": manifest["package_id"], "manifest_sha256": msha, "recipients": len(recipients),
                       "step": int(state.get("step") or 0), "publisher": signer.key_id[:16],
                       "source_checkpoint": source["artifact_id"] if source else None,
                       "epsilon": cert.get("epsilon") if cert.get("dp") else None})
        os.replace(tmp, out)
        try:  # a signed checkpoint after every release: deleting the package entry becomes detectable
            service.ledger.checkpoint()
        except Exception:  # noqa: BLE001 - the package exists; the next checkpoint will cover the entry
            pass
    finally:
        if tmp.exists():
            tmp.unlink()
    return manifest


def package_session(tc: Any, path: str | os.PathLike[str], *, recipients: Any, signer: Any = None,
                    expires_in_days: float = 365.0) -> dict[str, Any]:
    """Package the client's current adapter (through its public ``run_record()``: same blobs as a checkpoint)."""
    out = _check_out(path, expires_in_days)
    recips = _recipients(recipients)
    sig = _signer(tc.service, signer)
    blobs = tc.run_record()
    return _build(tc.service, blobs, out, recipients=recips, signer=sig, expires_in_days=expires_in_days,
                  source=None)


def package_checkpoint(service: Any, artifact_id: str, path: str | os.PathLike[str], *, recipients: Any,
                       signer: Any = None, expires_in_days: float = 365.0) -> dict[str, Any]:
    """Package the adapter of a saved checkpoint (artifact id) of ``service``'s workspace. Torch-free.

    ``service`` is a ServiceClient (a TrainingClient is accepted for its ``.service``). The evidence
    proves the checkpoint's ``save_state`` ledger entry as well as its training operations.
    """
    service = getattr(service, "service", service)
    out = _check_out(path, expires_in_days)
    recips = _recipients(recipients)
    if not isinstance(artifact_id, str) or not artifact_id:
        raise ConfigError("artifact_id must be the id returned by save_state (see list_checkpoints()).")
    blobs, _, info = service.store.load(artifact_id)
    sig = _signer(service, signer)
    return _build(service, blobs, out, recipients=recips, signer=sig, expires_in_days=expires_in_days,
                  source={"artifact_id": artifact_id, "name": info.name})
