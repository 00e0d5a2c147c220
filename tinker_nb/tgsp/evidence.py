"""Training provenance for a package: collected from the audit ledger, checked at verify time (torch-free).

evidence.json carries the data set digest and size (never the data), the training config, steps,
seed policy, library versions, the source checkpoint, and the workspace ledger's signed checkpoint
with the full ledger entries of the training operations and their RFC 9162 inclusion proofs. The
verifier recomputes each entry's record hash, checks each proof against the signed root, checks the
checkpoint's signature, and checks that the entries' parameter digests bind the evidence's own
config, data set digest/size, step count and source checkpoint (docs/TGSP_SPEC.md §evidence.json).
"""

from __future__ import annotations

import base64
import hashlib
import platform
import re
from typing import Any

from ..canonical import canonical_json
from ..errors import IntegrityError, PackageError, SignatureError
from ..ledger.log import CHECKPOINT_CONTEXT, checkpoint_message
from ..ledger.merkle import leaf_hash, verify_inclusion
from ..run_record import audit_params
from ..security.signing import HybridPublicKey
from . import format as F
from .container import fail

__all__ = ["check_evidence", "collect_evidence", "library_versions", "params_digest"]

_E = F.EVIDENCE
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_KEYS = {"seq", "ts", "tenant", "operation", "params_digest", "summary", "prev_hash", "record_hash"}


def params_digest(params: dict[str, Any]) -> str:
    """The ledger's digest of an operation's parameters: hex SHA-256 of their canonical JSON."""
    return hashlib.sha256(canonical_json(params)).hexdigest()


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape the artefact (read from metadata; imports nothing heavy)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("tinker-nb", "torch", "transformers", "peft", "opacus", "safetensors", "cryptography",
                "dp-accounting"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _bindings(state: dict[str, Any], source: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The parameters each proven ledger operation was appended with (owned by :mod:`tinker_nb.run_record`)."""
    b = {"create_training_client": audit_params("create_training_client", config=state["config"])}
    if state.get("dataset_sha256"):
        b["attach_dataset"] = audit_params("attach_dataset", dataset_sha256=state["dataset_sha256"],
                                           n=state["dataset_size"])
    if state.get("step"):
        b["optim_step"] = audit_params("optim_step", step=state["step"])
    if source is not None:
        b["save_state"] = audit_params("save_state", artifact_id=source["artifact_id"], name=source["name"])
    return b


def collect_evidence(ledger: Any, *, state: dict[str, Any], source: dict[str, Any] | None,
                     library: str) -> dict[str, Any]:
    """Evidence for a run described by ``state`` (a checkpoint's state.json); signs a fresh ledger checkpoint.

    ``source`` is ``{"artifact_id", "name"}`` when packaging a saved checkpoint (its ``save_state`` entry
    is proven too), else None. The proven entries are the last matching ones before that point.
    """
    entries = ledger.entries()
    want = {op: params_digest(p) for op, p in _bindings(state, source).items()}
    limit = len(entries)
    chosen: dict[str, Any] = {}
    if source is not None:
        hit = [e for e in entries if e.operation == "save_state" and e.params_digest == want["save_state"]]
        if not hit:
            raise PackageError(f"the workspace ledger has no save_state entry for artifact {source['artifact_id']!r}; "
                               "package checkpoints from the workspace (and tenant) that saved them.")
        chosen["save_state"] = hit[-1]
        limit = hit[-1].seq
    if "optim_step" in want:
        hit = [e for e in entries[:limit] if e.operation == "optim_step" and e.params_digest == want["optim_step"]]
        if hit:
            chosen["optim_step"] = hit[-1]
            limit = hit[-1].seq
    for op in ("create_training_client", "attach_dataset"):
        if op in want:
            hit = [e for e in entries[:limit] if e.operation == op and e.params_digest == want[op]]
            if hit:
                chosen[op] = hit[-1]
    cp = ledger.checkpoint()
    proven = []
    for op in ("create_training_client", "attach_dataset", "optim_step", "save_state"):
        if op in chosen:
            e = chosen[op]
            proof = ledger.inclusion_proof(e.seq, tree_size=cp.size)
            proven.append({"entry": {**e.body(), "record_hash": e.record_hash}, "inclusion_proof": proof["proof"]})
    cfg = state["config"]
    return {
        "format": F.EVIDENCE_FORMAT,
        "dataset": {"sha256": state.get("dataset_sha256"), "size": state.get("dataset_size"),
                    "digest_method": "SHA-256 over the tokenised records in order: for each record, the JSON array "
                                     "of its input_ids with separators (',', ':'), then a newline",
                    "note": "the training data itself is never included"},
        "training_config": cfg,
        "steps": int(state.get("step") or 0),
        "seeds": {"lora_init_seed": cfg.get("seed"),
                  "noise_and_sampling": ("fixed by the caller (not secret)" if state.get("noise_seed_fixed")
                                         else "secret, drawn from the OS; never stored in clear")},
        "sampling": sorted(state.get("sampling_sources") or []) or ["none"],
        "library": library,
        "library_versions": library_versions(),
        "source_checkpoint": source,
        "audit": {"checkpoint": cp.to_dict(), "entries": proven,
                  "unproven": sorted(set(want) - set(chosen))},
    }


# ---------------------------------------------------------------------- verification
def _check_checkpoint(cp: Any, trusted_ids: set[str]) -> dict[str, Any]:
    try:
        size, root, ts, tenant = int(cp["size"]), cp["root_hash"], cp["timestamp"], cp["tenant"]
        pub = base64.b64decode(cp["public_key"], validate=True)
        sig = base64.b64decode(cp["signature"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise fail(IntegrityError, _E, "audit.checkpoint is malformed.") from None
    if not isinstance(root, str) or not _HEX64.match(root) or size < 1:
        raise fail(IntegrityError, _E, "audit.checkpoint has a bad size or root hash.")
    try:
        key = HybridPublicKey(pub)
    except SignatureError:
        raise fail(IntegrityError, _E, "audit.checkpoint carries a malformed public key.") from None
    if key.key_id != cp.get("key_id"):
        raise fail(IntegrityError, _E, "audit.checkpoint key_id is not the SHA-256 of its public key.")
    try:
        key.verify(checkpoint_message(tenant, size, root, ts), sig, context=CHECKPOINT_CONTEXT)
    except SignatureError as exc:
        raise fail(IntegrityError, _E, f"the audit checkpoint's signature does not verify ({exc})") from None
    return {"size": size, "root_hash": root, "tenant": tenant, "timestamp": ts, "key_id": key.key_id,
            "key_pinned": key.key_id in trusted_ids}


def check_evidence(ev: Any, *, manifest: dict[str, Any], certificate: dict[str, Any],
                   trusted_ids: set[str]) -> dict[str, Any]:
    """Check evidence.json's ledger proofs and its agreement with the manifest and certificate; returns a summary."""
    try:
        return _check_evidence(ev, manifest=manifest, certificate=certificate, trusted_ids=trusted_ids)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise fail(IntegrityError, _E, f"malformed ({type(exc).__name__}).") from None


def _check_evidence(ev: Any, *, manifest: dict[str, Any], certificate: dict[str, Any],
                    trusted_ids: set[str]) -> dict[str, Any]:
    if not isinstance(ev, dict) or ev.get("format") != F.EVIDENCE_FORMAT:
        raise fail(IntegrityError, _E, f"not a {F.EVIDENCE_FORMAT} document.")
    try:
        cfg, ds, steps, audit = ev["training_config"], ev["dataset"], int(ev["steps"]), ev["audit"]
        proven_list = audit["entries"]
        lora, model_ref = cfg["lora_config"], cfg["model_ref"]
    except (KeyError, TypeError, ValueError):
        raise fail(IntegrityError, _E, "missing training_config, dataset, steps or audit.") from None
    if lora != manifest.get("lora_config") or model_ref != manifest.get("base_model", {}).get("ref"):
        raise fail(IntegrityError, _E, "training_config disagrees with the manifest's lora_config or base model.")
    dp = cfg.get("dp_config")
    if bool(dp) != bool(certificate.get("dp")):
        raise fail(IntegrityError, _E, "training_config.dp_config disagrees with the DP certificate.")
    if certificate.get("dp") and (
            float(dp["target_delta"]) != certificate["delta"]
            or float(dp["max_grad_norm"]) != certificate["max_grad_norm"]
            or steps != certificate["steps"] or ds.get("size") != certificate.get("dataset_size", ds.get("size"))):
        raise fail(IntegrityError, _E, "δ, C, steps or data set size disagree with the DP certificate.")
    cp = _check_checkpoint(audit.get("checkpoint"), trusted_ids)
    root = bytes.fromhex(cp["root_hash"])
    source = ev.get("source_checkpoint")
    state = {"config": cfg, "dataset_sha256": ds.get("sha256"), "dataset_size": ds.get("size"), "step": steps}
    expected = {op: params_digest(p) for op, p in _bindings(state, source).items()}
    proven: dict[str, int] = {}
    if not isinstance(proven_list, list):
        raise fail(IntegrityError, _E, "audit.entries must be a list.")
    for item in proven_list:
        try:
            e, proof = dict(item["entry"]), [bytes.fromhex(p) for p in item["inclusion_proof"]]
            seq = e["seq"]
        except (KeyError, TypeError, ValueError):
            raise fail(IntegrityError, _E, "an audit entry or its proof is malformed.") from None
        if set(e) != _ENTRY_KEYS or not isinstance(seq, int):
            raise fail(IntegrityError, _E, "an audit entry does not have exactly the ledger's fields.")
        rh = e.pop("record_hash")
        if hashlib.sha256(canonical_json(e)).hexdigest() != rh:
            raise fail(IntegrityError, _E, f"ledger entry {seq}: record hash does not match its contents.")
        if e["tenant"] != cp["tenant"]:
            raise fail(IntegrityError, _E, f"ledger entry {seq} belongs to another tenant than the checkpoint.")
        if not verify_inclusion(leaf_hash(bytes.fromhex(rh)), seq, cp["size"], proof, root):
            raise fail(IntegrityError, _E, f"ledger entry {seq} ({e['operation']}): inclusion proof does not verify "
                                           "against the signed checkpoint root.")
        op = e["operation"]
        if op not in expected:
            raise fail(IntegrityError, _E, f"ledger entry {seq}: unexpected operation {op!r}.")
        if e["params_digest"] != expected[op]:
            raise fail(IntegrityError, _E, f"ledger entry {seq} ({op}) was appended with other parameters than "
                                           "this evidence states (config, data set, step or checkpoint differ).")
        if op in proven:
            raise fail(IntegrityError, _E, f"operation {op} is proven twice.")
        proven[op] = seq
    return {"dataset_sha256": ds.get("sha256"), "dataset_size": ds.get("size"), "steps": steps,
            "source_checkpoint": source, "ledger_checkpoint": cp, "proven_operations": proven,
            "unproven_operations": sorted(set(expected) - set(proven))}
