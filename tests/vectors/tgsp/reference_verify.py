#!/usr/bin/env python3
"""Independent TGSP v1 verifier, written from docs/TGSP_SPEC.md alone (it imports nothing from tinker_nb).

Uses the Python standard library, a pure-Python Ed25519 verifier (RFC 8032 §5.1.7, below) and an
ML-DSA-65 implementation: ``pqcrypto`` (preferred, an independent implementation) or ``cryptography``.
With ``--recipient-key HEX`` it also opens the package (HPKE X-Wing and Cobblestone-256 from
``cryptography``) and checks the adapter digest. The DP ε recomputation (spec step 7) needs an
accountant and is left to ``tinker-nb verify``; this script reports the certificate's numbers.

    python reference_verify.py PACKAGE PUBLISHER.pub [--recipient-key HEX] [--now 2026-01-01T00:00:00Z]

Prints a JSON summary; exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import struct
import sys
import zlib
from datetime import datetime, timedelta, timezone

ENTRIES = ["manifest.json", "manifest.sig", "weights.enc", "recipients.json", "evidence.json", "dp_certificate.json"]
HASHED = ["weights.enc", "recipients.json", "evidence.json", "dp_certificate.json"]
LIMITS = {"manifest.json": 1 << 20, "manifest.sig": 65536, "weights.enc": (2 << 30) - (64 << 20),
          "recipients.json": 4 << 20, "evidence.json": 16 << 20, "dp_certificate.json": 1 << 20}
PREFIX = b"CompositeAlgorithmSignatures2025"
LABEL = b"COMPSIG-MLDSA65-Ed25519-SHA512"


class Fail(Exception):
    pass


# ---------------------------------------------------------------- Ed25519 verification (RFC 8032, pure Python)
_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _recover_x(y: int, sign: int):
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    return _P - x if (x & 1) != sign else x


def _add(a, b):
    A = (a[1] - a[0]) * (b[1] - b[0]) % _P
    B = (a[1] + a[0]) * (b[1] + b[0]) % _P
    C = 2 * a[3] * b[3] * _D % _P
    D = 2 * a[2] * b[2] % _P
    E, F, G, H = B - A, D - C, D + C, B + A
    return (E * F % _P, G * H % _P, F * G % _P, E * H % _P)


def _mul(s: int, pt):
    q = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _decompress(b: bytes):
    y = int.from_bytes(b, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_GY = 4 * pow(5, _P - 2, _P) % _P
_G = (_recover_x(_GY, 0), _GY, 1, _recover_x(_GY, 0) * _GY % _P)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    if len(public) != 32 or len(signature) != 64:
        return False
    a, r = _decompress(public), _decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= _L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _L
    lhs, rhs = _mul(s, _G), _add(r, _mul(h, a))
    return (lhs[0] * rhs[2] - rhs[0] * lhs[2]) % _P == 0 and (lhs[1] * rhs[2] - rhs[1] * lhs[2]) % _P == 0


def mldsa65_verify(public: bytes, message: bytes, signature: bytes, context: bytes) -> tuple[bool, str]:
    try:
        from pqcrypto.sign import ml_dsa_65

        try:  # pqcrypto 1.x raises on failure; 0.x returned False (and has no context): fail closed on both
            return ml_dsa_65.verify(public, message, signature, context=context) is not False, "pqcrypto"
        except Exception:  # noqa: BLE001
            return False, "pqcrypto"
    except ImportError:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey

        try:
            MLDSA65PublicKey.from_public_bytes(public).verify(signature, message, context)
            return True, "cryptography"
        except InvalidSignature:
            return False, "cryptography"


def composite_verify(public: bytes, message: bytes, signature: bytes, ctx: bytes) -> str:
    """Spec §Signatures. Returns the ML-DSA implementation used; raises Fail naming the half that failed."""
    if len(public) != 1984 or len(signature) != 3373:
        raise Fail("composite key must be 1984 bytes and signature 3373 bytes")
    m_prime = PREFIX + LABEL + bytes([len(ctx)]) + ctx + hashlib.sha512(message).digest()
    ok, impl = mldsa65_verify(public[:1952], m_prime, signature[:3309], LABEL)
    if not ok:
        raise Fail("ML-DSA-65 half does not verify")
    if not ed25519_verify(public[1952:], m_prime, signature[3309:]):
        raise Fail("Ed25519 half does not verify")
    return impl


# ---------------------------------------------------------------- RFC 9162 inclusion proof
def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------- container (spec §2)
def read_container(path: str) -> dict:
    """The six entries of a TGSP v1 zip, after every framing rule of spec §2 (stdlib only, no zipfile)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 22 or data[:4] != b"PK\x03\x04":
        raise Fail("not a zip starting with a local file header")
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_off, clen = struct.unpack("<4s4H2LH", data[-22:])
    if sig != b"PK\x05\x06" or clen:
        raise Fail("the end of central directory record (without comment) must be the last 22 bytes")
    if disk or cd_disk or n_disk != 6 or n_total != 6 or cd_off + cd_size != len(data) - 22:
        raise Fail("end record: one disk, 6 entries, central directory immediately before it")
    entries, pos, local = {}, cd_off, 0
    for want in ENTRIES:
        (sig, _made, _need, flags, method, time_, date, crc, csize, usize, nlen, xlen, clen, dstart, _ia, _ea,
         off) = struct.unpack("<4s6H3L5H2L", data[pos:pos + 46])
        name = data[pos + 46:pos + 46 + nlen]
        if sig != b"PK\x01\x02" or name != want.encode():
            raise Fail(f"central directory entry {len(entries)} must be {want}")
        if xlen or clen or flags or dstart or method or csize != usize or usize > LIMITS[want]:
            raise Fail(f"{want}: extra field, comment, flags, disk, method, size or limit not as TGSP v1 requires")
        if off != local:
            raise Fail(f"{want}: entries are not contiguous")
        lh = struct.unpack("<4s5H3L2H", data[off:off + 30])
        if lh[0] != b"PK\x03\x04" or data[off + 30:off + 30 + lh[9]] != name or lh[10] \
                or lh[2:9] != (flags, method, time_, date, crc, csize, usize):
            raise Fail(f"{want}: local header has an extra field or contradicts the central directory")
        body = data[off + 30 + nlen:off + 30 + nlen + usize]
        if len(body) != usize or zlib.crc32(body) != crc:
            raise Fail(f"{want}: CRC-32 or size mismatch")
        entries[want] = body
        local = off + 30 + nlen + usize
        pos += 46 + nlen
    if local != cd_off or pos != cd_off + cd_size:
        raise Fail("bytes hidden between the entries, the central directory and the end record")
    return entries


# ---------------------------------------------------------------- verification (spec §Verification)
def verify(path: str, publisher: dict, now: datetime, recipient_key: bytes | None) -> dict:
    out: dict = {"checks": []}
    # 1. container (spec §2), parsed byte by byte without zipfile
    e = read_container(path)
    out["checks"].append("container")
    # 2. signature under the pinned key
    sig = json.loads(e["manifest.sig"])
    pub = base64.b64decode(publisher["public_key"])
    if sha(pub) != sig["key_id"] or sig["algorithm"] != "MLDSA65-Ed25519-SHA512":
        raise Fail("manifest.sig: signer is not the pinned publisher key")
    out["mldsa_implementation"] = composite_verify(pub, e["manifest.json"], base64.b64decode(sig["signature"]),
                                                   b"tgsp/v1")
    out["checks"].append("manifest.sig (ML-DSA-65 + Ed25519)")
    # 3. manifest
    m = json.loads(e["manifest.json"])
    if canonical(m) != e["manifest.json"] or m["format"] != "tgsp/v1" or m["publisher"]["key_id"] != sig["key_id"] \
            or m["signature_context"] != "tgsp/v1":
        raise Fail("manifest.json: not canonical, not tgsp/v1, or publisher differs")
    out["checks"].append("manifest.json")
    # 4. digests
    for n in HASHED:
        if m["entries"][n] != {"sha256": sha(e[n]), "size": len(e[n])}:
            raise Fail(f"{n}: digest or size differs from the manifest")
    out["checks"].append("digests")
    # 5. time
    created = datetime.strptime(m["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    expires = datetime.strptime(m["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    if not (created <= now + timedelta(minutes=10) and now < expires):  # spec §10 step 5: 10 min clock skew
        raise Fail("manifest.json: expired or not yet valid")
    out["checks"].append("validity period")
    # 6. recipients
    rec = json.loads(e["recipients.json"])
    ids = [s["key_id"] for s in rec["recipients"]]
    if rec["format"] != "tgsp/v1/recipients" or not ids or len(set(ids)) != len(ids) \
            or any(len(base64.b64decode(s["sealed"])) != 1168 for s in rec["recipients"]):
        raise Fail("recipients.json: malformed")
    out["checks"].append("recipients.json")
    # 7. certificate (reported, not recomputed here)
    cert = json.loads(e["dp_certificate.json"])
    out["certificate"] = {k: cert.get(k) for k in ("dp", "epsilon", "delta", "accountant", "steps")}
    # 8. evidence: ledger checkpoint signature, entries, inclusion proofs, bindings
    ev = json.loads(e["evidence.json"])
    cp = ev["audit"]["checkpoint"]
    cp_pub = base64.b64decode(cp["public_key"])
    if sha(cp_pub) != cp["key_id"]:
        raise Fail("evidence.json: checkpoint key id mismatch")
    msg = f"tinker-nb/ledger-checkpoint/v1\n{cp['tenant']}\n{cp['size']}\n{cp['root_hash']}\n{cp['timestamp']}\n"
    composite_verify(cp_pub, msg.encode(), base64.b64decode(cp["signature"]), b"tinker-nb/ledger-checkpoint/v1")
    ds, cfg = ev["dataset"], ev["training_config"]
    binding = {"create_training_client": {"config": cfg}, "optim_step": {"step": ev["steps"]},
               "attach_dataset": {"dataset_sha256": ds["sha256"], "n": ds["size"]}}
    if ev.get("source_checkpoint"):
        binding["save_state"] = ev["source_checkpoint"]
    proven = []
    for item in ev["audit"]["entries"]:
        body = dict(item["entry"])
        rh = body.pop("record_hash")
        if sha(canonical(body)) != rh:
            raise Fail(f"evidence.json: entry {body['seq']} record hash")
        leaf = hashlib.sha256(b"\x00" + bytes.fromhex(rh)).digest()
        if not verify_inclusion(leaf, body["seq"], cp["size"], [bytes.fromhex(p) for p in item["inclusion_proof"]],
                                bytes.fromhex(cp["root_hash"])):
            raise Fail(f"evidence.json: entry {body['seq']} inclusion proof")
        if body["params_digest"] != sha(canonical(binding[body["operation"]])):
            raise Fail(f"evidence.json: entry {body['seq']} ({body['operation']}) binds other parameters")
        proven.append(body["operation"])
    out["proven_operations"] = proven
    out["checks"].append("evidence.json")
    # optional: open
    if recipient_key is not None:
        from cryptography.cobblestone import Cobblestone256Decryptor
        from cryptography.hazmat.primitives import hpke
        from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        if len(recipient_key) == 32:  # X-Wing seed: SHAKE256(seed, 96) = ML-KEM d ‖ z ‖ X25519 key (spec §3)
            recipient_key = hashlib.shake_256(recipient_key).digest(96)
        if len(recipient_key) != 96:
            raise Fail("a recipient private key is 32 bytes (X-Wing seed) or 96 bytes (expanded)")
        sk = hpke.MLKEM768X25519PrivateKey(MLKEM768PrivateKey.from_seed_bytes(recipient_key[:64]),
                                           X25519PrivateKey.from_private_bytes(recipient_key[64:96]))
        label, pid = b"tgsp/v1/package-key", m["package_id"].encode()
        info = b"tinker-nb/hpke/v1|" + len(label).to_bytes(2, "big") + label + pid
        suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
        for s in rec["recipients"]:
            try:
                key = suite.decrypt(base64.b64decode(s["sealed"]), sk, info=info)
                break
            except Exception:  # noqa: BLE001 - not our stanza
                continue
        else:
            raise Fail("recipients.json: no stanza opens with this recipient key")
        dec = Cobblestone256Decryptor(key, b"tgsp/v1/weights|" + pid)
        adapter = dec.update(e["weights.enc"]) + dec.finalize()
        if sha(adapter) != m["adapter"]["sha256"]:
            raise Fail("weights.enc: decrypted adapter digest differs")
        out["package_key"] = key.hex()
        out["adapter_sha256"] = sha(adapter)
        out["checks"].append("opened")
    out["ok"] = True
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("publisher", help="publisher public key JSON file")
    ap.add_argument("--recipient-key", help="hex of a raw recipient private key: the 32-byte X-Wing seed, or the "
                                            "96-byte expanded form (ML-KEM seed 64 B ‖ X25519 32 B)")
    ap.add_argument("--now", help="evaluate validity at this UTC time (YYYY-MM-DDTHH:MM:SSZ)")
    a = ap.parse_args(argv)
    now = (datetime.strptime(a.now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) if a.now
           else datetime.now(timezone.utc))
    try:
        with open(a.publisher) as f:
            publisher = json.load(f)
        res = verify(a.package, publisher, now, bytes.fromhex(a.recipient_key) if a.recipient_key else None)
    except (Fail, KeyError, ValueError, TypeError, struct.error) as exc:
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(res, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
