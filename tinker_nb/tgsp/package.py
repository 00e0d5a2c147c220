"""Build and verify TGSP v1 packages (torch-free; see docs/TGSP_SPEC.md).

A package is a zip with exactly six stored entries. ``manifest.json`` (canonical JSON) lists the
SHA-256 of the four content entries; ``manifest.sig`` is a composite ML-DSA-65 + Ed25519 signature over
the manifest bytes with context ``tgsp/v1``. ``weights.enc`` is the adapter (safetensors) encrypted with
Cobblestone-256 under a random package key that ``recipients.json`` seals to each recipient with HPKE
X-Wing. Verification trusts only pinned publisher keys passed by the caller.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..canonical import canonical_json
from ..errors import IntegrityError, KeyAccessError, PackageError, SignatureError, TrustError
from ..security.aead import decrypt_stream, encrypt_stream, new_key
from ..security.kem import SUITE_NAME, RecipientIdentity, RecipientPublicKey, seal
from ..security.signing import ALGORITHM, HybridPublicKey, HybridSigner
from . import format as F
from .certificate import check_certificate

__all__ = ["build_package", "verify_package", "decrypt_weights", "VerifyReport", "read_entries"]


@dataclass
class VerifyReport:
    ok: bool
    package_id: str
    publisher_key_id: str
    created: str
    expires: str
    entries: dict[str, str]
    certificate: dict[str, Any]
    recipients: list[str]
    checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def build_package(path: str | os.PathLike, *, adapter: bytes, base_model: dict, lora_config: dict,
                  tokenizer_sha256: str | None, evidence: dict, certificate: dict, signer: HybridSigner,
                  recipients: list[RecipientPublicKey], expires_in_days: float = 365.0) -> dict:
    """Write a signed package to ``path`` atomically; returns the manifest."""
    if not recipients:
        raise PackageError("a package needs at least one recipient public key.")
    if not isinstance(signer, HybridSigner):
        raise PackageError("signer must be a HybridSigner (see `tinker-nb keygen`).")
    package_id = uuid.uuid4().hex
    now = datetime.now(timezone.utc).replace(microsecond=0)
    key = new_key()
    sink = io.BytesIO()
    encrypt_stream(key, [adapter], sink, context=F.WEIGHTS_CONTEXT_PREFIX + package_id.encode())
    weights = sink.getvalue()
    stanzas = []
    seen = set()
    for r in recipients:
        if not isinstance(r, RecipientPublicKey):
            raise PackageError("recipients must be RecipientPublicKey objects (load them with load_recipient).")
        if r.key_id in seen:
            continue
        seen.add(r.key_id)
        stanzas.append({"key_id": r.key_id, "sealed": base64.b64encode(
            seal(r, key, info=F.HPKE_INFO, aad=package_id.encode())).decode()})
    recipients_json = canonical_json({"suite": SUITE_NAME, "recipients": stanzas})
    evidence_json = canonical_json(evidence)
    cert_json = canonical_json(certificate)
    contents = {F.WEIGHTS: weights, F.RECIPIENTS: recipients_json, F.EVIDENCE: evidence_json, F.CERTIFICATE: cert_json}
    manifest = {
        "format": F.FORMAT, "package_id": package_id, "created": now.isoformat(),
        "expires": (now + timedelta(days=expires_in_days)).isoformat(),
        "base_model": base_model, "lora_config": lora_config, "tokenizer_sha256": tokenizer_sha256,
        "adapter_sha256": _sha(adapter),
        "entries": {name: _sha(data) for name, data in contents.items()},
        "publisher": {"key_id": signer.key_id, "algorithm": ALGORITHM},
        "signature_algorithm": ALGORITHM, "weights_encryption": "Cobblestone-256 (AES-256-GCM, chunked)",
        "recipient_suite": SUITE_NAME,
    }
    manifest_bytes = canonical_json(manifest)
    sig = canonical_json({"algorithm": ALGORITHM, "key_id": signer.key_id,
                          "signature": base64.b64encode(signer.sign(manifest_bytes, context=F.SIGN_CONTEXT)).decode()})
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in ((F.MANIFEST, manifest_bytes), (F.SIGNATURE, sig), *contents.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, data)
    os.replace(tmp, out)
    return manifest


def read_entries(path: str | os.PathLike) -> dict[str, bytes]:
    """Read the zip with shape checks: exactly the six entries, once each, within size limits."""
    p = Path(path)
    if not p.is_file():
        raise PackageError(f"{p}: no such package file.")
    try:
        z = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError):
        raise PackageError(f"{p}: not a zip archive.") from None
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        for n in names:
            if n.startswith("/") or ".." in n.split("/") or "\\" in n or n not in F.ENTRIES:
                raise PackageError(f"unexpected entry {n!r} (only {', '.join(F.ENTRIES)} are allowed).")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise PackageError(f"duplicate entries: {sorted(dup)}.")
        missing = [n for n in F.ENTRIES if n not in names]
        if missing:
            raise PackageError(f"missing entries: {missing}.")
        out = {}
        for i in infos:
            if i.file_size > F.MAX_SIZES[i.filename]:
                raise PackageError(f"entry {i.filename!r} is {i.file_size} bytes, over its limit of "
                                   f"{F.MAX_SIZES[i.filename]}.")
            try:
                data = z.read(i)
            except (zipfile.BadZipFile, OSError, ValueError):
                raise IntegrityError(f"entry {i.filename!r} is corrupt (zip CRC or framing).") from None
            out[i.filename] = data
        return out


def _json(entries: dict[str, bytes], name: str) -> dict:
    try:
        return json.loads(entries[name])
    except (ValueError, UnicodeDecodeError):
        raise PackageError(f"{name} is not valid JSON.") from None


def verify_package(path: str | os.PathLike, *, trust: list[HybridPublicKey], now: datetime | None = None) -> VerifyReport:
    """Verify shape, publisher trust, both signature halves, every digest, expiry and the DP certificate."""
    if not trust:
        raise TrustError("no trusted publisher keys given: pass trust=[publisher public keys] (keys inside a "
                         "package are never trusted).")
    e = read_entries(path)
    checks = ["zip shape: six fixed entries, no duplicates, within size limits"]
    sig = _json(e, F.SIGNATURE)
    pinned = {k.key_id: k for k in trust}
    key = pinned.get(sig.get("key_id"))
    if key is None:
        raise TrustError(f"manifest.sig: signer {str(sig.get('key_id'))[:16]}… is not in the trust store.")
    try:
        raw_sig = base64.b64decode(sig["signature"], validate=True)
    except (KeyError, ValueError):
        raise SignatureError("manifest.sig: malformed signature encoding.") from None
    try:
        key.verify(e[F.MANIFEST], raw_sig, context=F.SIGN_CONTEXT)
    except SignatureError as exc:
        raise SignatureError(f"manifest.sig: {exc}") from None
    checks.append("manifest.sig: ML-DSA-65 and Ed25519 halves verify under a pinned key")
    m = _json(e, F.MANIFEST)
    if e[F.MANIFEST] != canonical_json(m):
        raise PackageError("manifest.json is not canonical JSON.")
    if m.get("format") != F.FORMAT:
        raise PackageError(f"manifest.json: unsupported format {m.get('format')!r}.")
    if m.get("publisher", {}).get("key_id") != key.key_id:
        raise SignatureError("manifest.json: publisher key id differs from the signing key.")
    for name in F.HASHED:
        if m.get("entries", {}).get(name) != _sha(e[name]):
            raise IntegrityError(f"{name}: SHA-256 does not match the signed manifest.")
    checks.append("digests of weights.enc, recipients.json, evidence.json, dp_certificate.json match")
    now = now or datetime.now(timezone.utc)
    try:
        expires = datetime.fromisoformat(m["expires"])
    except (KeyError, ValueError):
        raise PackageError("manifest.json: bad 'expires'.") from None
    if now >= expires:
        raise TrustError(f"package expired at {m['expires']}.")
    checks.append(f"not expired (expires {m['expires']})")
    cert = check_certificate(_json(e, F.CERTIFICATE))
    checks.append("dp_certificate: ε recomputed from its parameters" if cert.get("dp") else "dp_certificate: non-DP")
    rec = _json(e, F.RECIPIENTS)
    return VerifyReport(True, m["package_id"], key.key_id, m["created"], m["expires"], dict(m["entries"]), cert,
                        [r["key_id"] for r in rec.get("recipients", [])], checks)


def decrypt_weights(path: str | os.PathLike, *, identity: RecipientIdentity, trust: list[HybridPublicKey]) -> tuple[bytes, dict, VerifyReport]:
    """Verify, unseal the package key with ``identity``, decrypt the adapter: (safetensors bytes, manifest, report)."""
    report = verify_package(path, trust=trust)
    e = read_entries(path)
    m = json.loads(e[F.MANIFEST])
    stanza = next((r for r in json.loads(e[F.RECIPIENTS])["recipients"] if r["key_id"] == identity.key_id), None)
    if stanza is None:
        raise KeyAccessError("this identity is not a recipient of the package.")
    key = identity.open(base64.b64decode(stanza["sealed"]), info=F.HPKE_INFO, aad=m["package_id"].encode())
    adapter = decrypt_stream(key, io.BytesIO(e[F.WEIGHTS]), context=F.WEIGHTS_CONTEXT_PREFIX + m["package_id"].encode(),
                             what="weights.enc")
    if _sha(adapter) != m["adapter_sha256"]:
        raise IntegrityError("weights.enc: decrypted adapter does not match adapter_sha256.")
    return adapter, m, report
