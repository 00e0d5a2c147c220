"""Build, verify and unseal TGSP v1 packages (torch-free; docs/TGSP_SPEC.md).

``manifest.json`` (canonical JSON) lists the SHA-256 and size of the four content entries;
``manifest.sig`` is a composite ML-DSA-65 + Ed25519 signature over the manifest bytes with context
``tgsp/v1``. ``weights.enc`` is the adapter (safetensors) encrypted with Cobblestone-256 under a fresh
package key, which ``recipients.json`` seals to each recipient with HPKE X-Wing. Verification trusts
only the pinned publisher keys the caller passes, never a key found inside the package.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..canonical import canonical_json
from ..errors import ConfigError, IntegrityError, KeyAccessError, PackageError, SignatureError, TrustError
from ..security.aead import encrypt_stream, new_key
from ..security.kem import SUITE_NAME, RecipientIdentity, RecipientPublicKey, seal
from ..security.signing import ALGORITHM, HybridPublicKey, HybridSigner, load_public_key
from . import format as F
from .adapter import parse_header
from .certificate import check_certificate
from .container import Container, fail, write_container
from .evidence import check_evidence

__all__ = ["PackageReport", "build_package", "inspect_package", "load_trust", "unseal_adapter", "verify_package"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class PackageReport:
    """What ``verify_package`` established. Every listed check passed (a failure raises instead)."""

    ok: bool
    package_id: str
    manifest_sha256: str
    publisher_key_id: str
    created: str
    expires: str
    base_model: dict[str, Any]
    lora_config: dict[str, Any]
    adapter_sha256: str
    entries: dict[str, dict[str, Any]]
    certificate: dict[str, Any]
    evidence: dict[str, Any]
    recipients: list[str]
    checks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"TGSP package {self.package_id}: VERIFIED",
                 f"  publisher {self.publisher_key_id} (pinned)",
                 f"  created {self.created}, expires {self.expires}"]
        lines += [f"  ✓ {c}" for c in self.checks]
        lines += [f"  ⚠ {w}" for w in self.warnings]
        return "\n".join(lines)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def load_trust(trust: Any) -> list[HybridPublicKey]:
    """Normalise a trust store: public keys, key files, key dicts (one or a list)."""
    if trust is None:
        return []
    if isinstance(trust, (HybridPublicKey, HybridSigner, str, os.PathLike, dict, bytes)):
        trust = [trust]
    keys = []
    for t in trust:
        if isinstance(t, HybridSigner):
            t = t.public_key()
        try:
            keys.append(load_public_key(t))
        except (KeyAccessError, SignatureError, TypeError, ValueError) as exc:
            raise TrustError(f"cannot load trusted publisher key {t if isinstance(t, (str, os.PathLike)) else ''}: "
                             f"{exc}") from None
    return keys


# ---------------------------------------------------------------------- build
def build_package(path: str | os.PathLike[str], *, adapter: bytes, base_model: dict[str, Any],
                  lora_config: dict[str, Any], tokenizer_sha256: str | None, evidence: dict[str, Any],
                  certificate: dict[str, Any], signer: HybridSigner,
                  recipients: Iterable[RecipientPublicKey], expires_in_days: float = 365.0,
                  now: datetime | None = None) -> dict[str, Any]:
    """Encrypt, seal, sign and write a package to ``path`` atomically; returns the manifest.

    ``adapter`` is a safetensors file with PEFT tensor names. Low level: ``TrainingClient.package`` and
    ``package_checkpoint`` fill in the base model digests, evidence and certificate.
    """
    if not isinstance(signer, HybridSigner):
        raise PackageError("signer must be a HybridSigner (create one with `tinker-nb keygen publisher`).")
    recips = list(recipients)
    if not recips:
        raise PackageError("a package needs at least one recipient public key.")
    if len(recips) > F.MAX_RECIPIENTS:
        raise PackageError(f"at most {F.MAX_RECIPIENTS} recipients per package.")
    if not all(isinstance(r, RecipientPublicKey) for r in recips):
        raise PackageError("recipients must be RecipientPublicKey objects (load files with load_recipient).")
    if not isinstance(expires_in_days, (int, float)) or not 0 < expires_in_days <= 36600:
        raise PackageError(f"expires_in_days must be in (0, 36600], got {expires_in_days!r}.")
    parse_header(adapter)
    package_id = uuid.uuid4().hex
    created = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    key = new_key()
    sink = io.BytesIO()
    encrypt_stream(key, [adapter], sink, context=F.WEIGHTS_CONTEXT_PREFIX + package_id.encode())
    weights = sink.getvalue()
    stanzas, seen = [], set()
    for r in recips:
        if r.key_id in seen:
            continue
        seen.add(r.key_id)
        stanzas.append({"key_id": r.key_id, "sealed": base64.b64encode(
            seal(r, key, info=F.HPKE_INFO, aad=package_id.encode())).decode()})
    del key
    contents = {F.WEIGHTS: weights,
                F.RECIPIENTS: canonical_json({"format": F.RECIPIENTS_FORMAT, "suite": SUITE_NAME,
                                              "recipients": stanzas}),
                F.EVIDENCE: canonical_json(evidence), F.CERTIFICATE: canonical_json(certificate)}
    manifest = {
        "format": F.FORMAT, "package_id": package_id,
        "created": F.format_time(created), "expires": F.format_time(created + timedelta(days=expires_in_days)),
        "base_model": base_model, "lora_config": lora_config, "tokenizer_sha256": tokenizer_sha256,
        "adapter": {"format": "safetensors", "tensor_names": "peft", "sha256": _sha(adapter), "size": len(adapter)},
        "entries": {name: {"sha256": _sha(data), "size": len(data)} for name, data in contents.items()},
        "publisher": {"key_id": signer.key_id, "algorithm": ALGORITHM},
        "signature_algorithm": ALGORITHM, "signature_context": F.SIGN_CONTEXT.decode(),
        "weights_encryption": F.WEIGHTS_ENCRYPTION, "recipient_suite": SUITE_NAME,
    }
    manifest_bytes = canonical_json(manifest)
    sig = canonical_json({"algorithm": ALGORITHM, "key_id": signer.key_id,
                          "signature": base64.b64encode(signer.sign(manifest_bytes, context=F.SIGN_CONTEXT)).decode()})
    write_container(path, {F.MANIFEST: manifest_bytes, F.SIGNATURE: sig, **contents})
    return manifest


# ---------------------------------------------------------------------- verify
def _json(c: Container, name: str) -> Any:
    try:
        return json.loads(c.small[name])
    except (ValueError, UnicodeDecodeError):
        raise fail(PackageError, name, "not valid UTF-8 JSON.") from None


def _check_signature(c: Container, trust: list[HybridPublicKey]) -> HybridPublicKey:
    sig = _json(c, F.SIGNATURE)
    if not isinstance(sig, dict) or sig.get("algorithm") != ALGORITHM:
        raise fail(SignatureError, F.SIGNATURE, f"not a {ALGORITHM} signature document.")
    pinned = {k.key_id: k for k in trust}
    key_id = sig.get("key_id")
    key = pinned.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        raise fail(TrustError, F.SIGNATURE, f"signed by key {str(sig.get('key_id'))[:16]}…, which is not in the "
                                           "trust store (pin the publisher's public key with trust=/--trust).")
    try:
        raw = base64.b64decode(sig.get("signature", ""), validate=True)
    except (ValueError, TypeError):
        raise fail(SignatureError, F.SIGNATURE, "the signature is not valid base64.") from None
    try:
        key.verify(c.small[F.MANIFEST], raw, context=F.SIGN_CONTEXT)
    except SignatureError as exc:
        raise fail(SignatureError, F.SIGNATURE, f"does not verify over manifest.json: {exc}") from None
    return key


def _check_manifest(c: Container, key: HybridPublicKey, now: datetime) -> dict[str, Any]:
    m = _json(c, F.MANIFEST)
    if not isinstance(m, dict) or c.small[F.MANIFEST] != canonical_json(m):
        raise fail(PackageError, F.MANIFEST, "not canonical JSON.")
    if m.get("format") != F.FORMAT:
        raise fail(PackageError, F.MANIFEST,
                   f"unsupported format {m.get('format')!r} (this verifier reads {F.FORMAT}).")
    try:
        pid, pub, entries, adapter = m["package_id"], m["publisher"], m["entries"], m["adapter"]
        created, expires = F.parse_time(m["created"]), F.parse_time(m["expires"])
        bm, lc = m["base_model"], m["lora_config"]
        if not (isinstance(pub, dict) and isinstance(bm, dict) and isinstance(bm.get("ref"), str)
                and isinstance(bm.get("weights"), dict) and isinstance(lc, dict) and "rank" in lc
                and isinstance(lc.get("target_modules"), list)):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise fail(PackageError, F.MANIFEST, "missing or malformed fields (package_id, created, expires, publisher, "
                                             "entries, adapter, base_model, lora_config).") from None
    if not isinstance(pid, str) or not _HEX32.match(pid):
        raise fail(PackageError, F.MANIFEST, "package_id must be 32 lowercase hex characters.")
    if pub.get("key_id") != key.key_id or m.get("signature_algorithm") != ALGORITHM \
            or m.get("signature_context") != F.SIGN_CONTEXT.decode():
        raise fail(SignatureError, F.MANIFEST, "publisher key id, signature algorithm or context differ from the "
                                               "signature that covers it.")
    if not isinstance(entries, dict) or sorted(entries) != sorted(F.HASHED):
        raise fail(PackageError, F.MANIFEST, f"'entries' must list exactly {', '.join(F.HASHED)}.")
    if not isinstance(adapter, dict) or not _HEX64.match(str(adapter.get("sha256"))) \
            or adapter.get("format") != "safetensors" or not isinstance(adapter.get("size"), int) \
            or isinstance(adapter.get("size"), bool) or adapter["size"] < 0:
        raise fail(PackageError, F.MANIFEST, "adapter {format: safetensors, sha256, size} is missing or malformed.")
    if m.get("weights_encryption") != F.WEIGHTS_ENCRYPTION or m.get("recipient_suite") != SUITE_NAME:
        raise fail(PackageError, F.MANIFEST, f"weights_encryption must be {F.WEIGHTS_ENCRYPTION!r} and "
                                             f"recipient_suite {SUITE_NAME!r} (TGSP v1).")
    tok = m.get("tokenizer_sha256")
    if tok is not None and not _HEX64.match(str(tok)):
        raise fail(PackageError, F.MANIFEST, "tokenizer_sha256 must be 64 lowercase hex characters or null.")
    if now >= expires:
        raise fail(TrustError, F.MANIFEST, f"the package expired at {m['expires']}.")
    if created > now + timedelta(seconds=F.CLOCK_SKEW_S) or created >= expires:
        raise fail(TrustError, F.MANIFEST, f"created time {m['created']} is in the future or after expiry.")
    return m


def _check_digests(c: Container, m: dict[str, Any]) -> None:
    for name in F.HASHED:
        want = m["entries"][name]
        if not isinstance(want, dict) or want.get("size") != c.size(name):
            raise fail(IntegrityError, name, f"size {c.size(name)} does not match the signed manifest.")
        if c.sha256(name) != want.get("sha256"):
            raise fail(IntegrityError, name, "SHA-256 does not match the signed manifest.")


def _check_recipients(c: Container) -> list[str]:
    r = _json(c, F.RECIPIENTS)
    try:
        ok = r["format"] == F.RECIPIENTS_FORMAT and r["suite"] == SUITE_NAME and isinstance(r["recipients"], list)
        ids = [s["key_id"] for s in r["recipients"]]
        sealed = [base64.b64decode(s["sealed"], validate=True) for s in r["recipients"]]
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise fail(PackageError, F.RECIPIENTS, "malformed (format, suite, recipients[{key_id, sealed}]).")
    if not ids or len(ids) > F.MAX_RECIPIENTS or len(set(ids)) != len(ids) \
            or not all(isinstance(i, str) and _HEX64.match(i) for i in ids) \
            or any(len(s) != F.SEALED_KEY_LEN for s in sealed):
        raise fail(PackageError, F.RECIPIENTS, f"needs 1..{F.MAX_RECIPIENTS} distinct 64-hex key ids, each with a "
                                               f"{F.SEALED_KEY_LEN}-byte sealed key.")
    return ids


def _verify_open(c: Container, trust: Any, now: datetime | None) -> tuple[PackageReport, dict[str, Any]]:
    keys = load_trust(trust)
    if not keys:
        raise TrustError("no trusted publisher keys: pass trust=[publisher public key, …] (a key inside a package "
                         "is never trusted).")
    if now is None:
        now = datetime.now(timezone.utc)
    elif not isinstance(now, datetime) or now.tzinfo is None:
        raise ConfigError("now must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)).")
    checks = ["zip shape: exactly the six TGSP entries, stored, contiguous, each once, within size limits"]
    key = _check_signature(c, keys)
    checks.append(f"manifest.sig: ML-DSA-65 and Ed25519 halves both verify under pinned key {key.key_id[:16]}…")
    m = _check_manifest(c, key, now)
    checks.append("manifest.json: canonical, format tgsp/v1, publisher = signing key")
    _check_digests(c, m)
    checks.append("SHA-256 and size of weights.enc, recipients.json, evidence.json, dp_certificate.json match")
    checks.append(f"not expired (expires {m['expires']})")
    recipients = _check_recipients(c)
    checks.append(f"recipients.json: {len(recipients)} well-formed HPKE stanzas")
    cert_doc = _json(c, F.CERTIFICATE)
    cert = check_certificate(cert_doc)
    warnings = []
    if cert["dp"]:
        checks.append(f"dp_certificate.json: ε={cert['epsilon']:.4g} (δ={cert['delta']:g}) recomputed from σ, q, "
                      f"steps as {cert['epsilon_recomputed']:.4g} ({cert['recomputed_with'].upper()}); RDP "
                      f"ε={cert['epsilon_rdp_recomputed']:.4g}")
        if not cert["accounting_valid"]:
            warnings.append("the DP certificate says the accounting assumptions were NOT met: "
                            + " ".join(cert["notes"]))
    else:
        checks.append("dp_certificate.json: states plainly that training was NOT differentially private")
        warnings.append("no differential-privacy guarantee: the adapter was trained without DP.")
    ev = check_evidence(_json(c, F.EVIDENCE), manifest=m, certificate=cert_doc, trusted_ids={k.key_id for k in keys})
    lc = ev["ledger_checkpoint"]
    checks.append(f"evidence.json: {len(ev['proven_operations'])} ledger entries "
                  f"({', '.join(ev['proven_operations'])}) proven against the ledger checkpoint of "
                  f"{lc['size']} entries, whose signature verifies")
    if not lc["key_pinned"]:
        warnings.append(f"the audit checkpoint is signed by workspace key {lc['key_id'][:16]}…, which is not in the "
                        "trust store; the publisher's signature vouches for it.")
    if not m["base_model"]["weights"]:
        warnings.append(f"the base model {m['base_model']['ref']!r} is not pinned by digest (it was not a local "
                        "folder when packaged): check it yourself before loading the adapter.")
    if ev["unproven_operations"]:
        warnings.append(f"no ledger proof for: {', '.join(ev['unproven_operations'])}.")
    report = PackageReport(True, m["package_id"], _sha(c.small[F.MANIFEST]), key.key_id, m["created"], m["expires"],
                          m["base_model"], m["lora_config"], m["adapter"]["sha256"], m["entries"], cert, ev,
                          recipients, checks, warnings)
    return report, m


def verify_package(path: str | os.PathLike[str], *, trust: Any, now: datetime | None = None) -> PackageReport:
    """Verify a package against pinned publisher keys; raises on the first failure, naming the entry.

    Checks, in order: zip shape; the signer is pinned and both signature halves verify over
    manifest.json; the manifest is canonical and well-formed; every entry's digest and size; expiry;
    recipients.json; the DP certificate (ε recomputed from its parameters); evidence.json (ledger
    proofs and bindings). Errors: PackageError, TrustError, SignatureError, IntegrityError.
    """
    with Container(path) as c:
        report, _ = _verify_open(c, trust, now)
    return report


class _HashingReader:
    """``read(n)`` over an iterator of blocks, feeding every block to ``h`` as it is read."""

    def __init__(self, blocks: Iterator[bytes], h: Any) -> None:
        self.blocks, self.h = blocks, h
        self.buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            try:
                b = next(self.blocks)
            except StopIteration:
                break
            self.h.update(b)
            self.buf += b
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


def unseal_adapter(path: str | os.PathLike[str], *, identity: RecipientIdentity, trust: Any,
                   now: datetime | None = None) -> tuple[bytes, dict[str, Any], PackageReport]:
    """Verify, open the package key with ``identity``, decrypt: (adapter safetensors bytes, manifest, report).

    The file is opened once; the ciphertext is re-hashed while it is decrypted and must equal the
    signed digest before any plaintext is returned.
    """
    from ..security.aead import decrypt_stream

    if not isinstance(identity, RecipientIdentity):
        raise KeyAccessError("identity must be a RecipientIdentity (load it with load_identity / `tinker-nb keygen`).")
    with Container(path) as c:
        report, m = _verify_open(c, trust, now)
        stanzas = json.loads(c.small[F.RECIPIENTS])["recipients"]
        stanza = next((s for s in stanzas if s["key_id"] == identity.key_id), None)
        if stanza is None:
            raise fail(KeyAccessError, F.RECIPIENTS, f"identity {identity.key_id[:16]}… is not a recipient of this "
                                                     "package (ask the publisher to package it for your public key).")
        key = identity.open(base64.b64decode(stanza["sealed"]), info=F.HPKE_INFO, aad=m["package_id"].encode())
        h = hashlib.sha256()
        adapter = decrypt_stream(key, _HashingReader(c.stream(F.WEIGHTS), h),
                                 context=F.WEIGHTS_CONTEXT_PREFIX + m["package_id"].encode(), what=F.WEIGHTS)
        if h.hexdigest() != m["entries"][F.WEIGHTS]["sha256"]:
            raise fail(IntegrityError, F.WEIGHTS, "changed on disk while being opened.")
    if _sha(adapter) != m["adapter"]["sha256"] or len(adapter) != m["adapter"].get("size"):
        raise fail(IntegrityError, F.WEIGHTS, "the decrypted adapter does not match adapter.sha256/size.")
    parse_header(adapter, what=F.WEIGHTS)
    return adapter, m, report



def inspect_package(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest, certificate, evidence and recipient key ids after the shape checks only (NOT verified)."""
    with Container(path) as c:
        out = {name: _json(c, name) for name in (F.MANIFEST, F.CERTIFICATE, F.EVIDENCE)}
        rec = _json(c, F.RECIPIENTS)
        out[F.RECIPIENTS] = [s.get("key_id") for s in rec.get("recipients", [])] if isinstance(rec, dict) else []
        out["manifest_sha256"] = _sha(c.small[F.MANIFEST])
    for name in (F.MANIFEST, F.CERTIFICATE, F.EVIDENCE):
        if not isinstance(out[name], dict):
            raise fail(PackageError, name, "must be a JSON object.")
    return out

