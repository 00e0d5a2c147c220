"""Composite signatures: ML-DSA-65 + Ed25519 (IETF composite ML-DSA, id-MLDSA65-Ed25519-SHA512).

Message representative (draft-ietf-lamps-pq-composite-sigs)::

    M' = "CompositeAlgorithmSignatures2025" ‖ "COMPSIG-MLDSA65-Ed25519-SHA512" ‖ len(ctx) (1 byte) ‖ ctx ‖ SHA-512(M)

    signature  = ML-DSA-65.Sign(sk1, M', ctx="COMPSIG-MLDSA65-Ed25519-SHA512") (3309 B) ‖ Ed25519.Sign(sk2, M') (64 B)
    public key = ML-DSA-65 public key (1952 B) ‖ Ed25519 public key (32 B)
    key id     = hex SHA-256(public key)

Verification requires BOTH halves. The components come from ``cryptography``; nothing is hand-written.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ..errors import KeyAccessError, SignatureError
from .passphrase import protect, unprotect

__all__ = [
    "ALGORITHM",
    "LABEL",
    "PREFIX",
    "HybridPublicKey",
    "HybridSigner",
    "load_public_key",
    "load_signer",
    "message_representative",
]

ALGORITHM = "MLDSA65-Ed25519-SHA512"
PREFIX = b"CompositeAlgorithmSignatures2025"
LABEL = b"COMPSIG-MLDSA65-Ed25519-SHA512"
MLDSA_PK, ED_PK, MLDSA_SIG, ED_SIG = 1952, 32, 3309, 64


def message_representative(message: bytes, context: bytes) -> bytes:
    """M' of the composite construction (see module docstring)."""
    if not isinstance(context, (bytes, bytearray)) or len(context) > 255:
        raise SignatureError("signature context must be bytes of at most 255 bytes.")
    return PREFIX + LABEL + bytes([len(context)]) + bytes(context) + hashlib.sha512(message).digest()


class HybridPublicKey:
    """A composite public key; ``verify`` raises SignatureError unless both halves verify."""

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != MLDSA_PK + ED_PK:
            raise SignatureError(f"a {ALGORITHM} public key is {MLDSA_PK + ED_PK} bytes.")
        self.raw = bytes(raw)
        try:
            self._mldsa = MLDSA65PublicKey.from_public_bytes(self.raw[:MLDSA_PK])
            self._ed = Ed25519PublicKey.from_public_bytes(self.raw[MLDSA_PK:])
        except ValueError:
            raise SignatureError("malformed composite public key.") from None

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def verify(self, message: bytes, signature: bytes, *, context: bytes) -> None:
        if not isinstance(signature, (bytes, bytearray)) or len(signature) != MLDSA_SIG + ED_SIG:
            raise SignatureError(f"composite signature must be {MLDSA_SIG + ED_SIG} bytes, got "
                                 f"{len(signature) if isinstance(signature, (bytes, bytearray)) else type(signature)}.")
        m = message_representative(message, context)
        try:
            self._mldsa.verify(bytes(signature[:MLDSA_SIG]), m, LABEL)
        except InvalidSignature:
            raise SignatureError("the ML-DSA-65 half of the signature does not verify.") from None
        try:
            self._ed.verify(bytes(signature[MLDSA_SIG:]), m)
        except InvalidSignature:
            raise SignatureError("the Ed25519 half of the signature does not verify.") from None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "tinker-nb/public-key", "algorithm": ALGORITHM, "key_id": self.key_id,
                "public_key": base64.b64encode(self.raw).decode()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridPublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"HybridPublicKey({ALGORITHM}, key_id={self.key_id[:16]}…)"


class HybridSigner:
    """A composite private key. Component keys are fresh and never used alone."""

    def __init__(self, mldsa_seed: bytes, ed25519_raw: bytes) -> None:
        if len(mldsa_seed) != 32 or len(ed25519_raw) != 32:
            raise KeyAccessError("malformed composite private key.")
        self._mldsa = MLDSA65PrivateKey.from_seed_bytes(mldsa_seed)
        self._ed = Ed25519PrivateKey.from_private_bytes(ed25519_raw)
        self._pub = HybridPublicKey(self._mldsa.public_key().public_bytes_raw()
                                    + self._ed.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def generate(cls) -> HybridSigner:
        import os

        return cls(os.urandom(32), os.urandom(32))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> HybridSigner:
        """64 bytes: ML-DSA-65 seed ‖ Ed25519 private key (the IETF composite private key layout)."""
        if len(raw) != 64:
            raise KeyAccessError("a composite private key is 64 bytes.")
        return cls(raw[:32], raw[32:])

    def _private_bytes(self) -> bytes:
        return self._mldsa.private_bytes_raw() + self._ed.private_bytes(Encoding.Raw, PrivateFormat.Raw,
                                                                        NoEncryption())

    def public_key(self) -> HybridPublicKey:
        return self._pub

    @property
    def key_id(self) -> str:
        return self._pub.key_id

    def sign(self, message: bytes, *, context: bytes) -> bytes:
        m = message_representative(message, context)
        return self._mldsa.sign(m, LABEL) + self._ed.sign(m)

    def to_protected_dict(self, passphrase: str) -> dict[str, Any]:
        """Passphrase-protected (Argon2id + AES-256-GCM) private key, with its public key in clear."""
        return {"type": "tinker-nb/signing-key", "algorithm": ALGORITHM, "key_id": self.key_id,
                "public_key": base64.b64encode(self._pub.raw).decode(),
                "protected": protect(self._private_bytes(), passphrase, label="signing-key")}

    def save(self, path: str | Path, *, passphrase: str) -> None:
        from ..fsio import atomic_write

        atomic_write(Path(path), (json.dumps(self.to_protected_dict(passphrase), indent=1) + "\n").encode())

    def __repr__(self) -> str:
        return f"HybridSigner({ALGORITHM}, key_id={self.key_id[:16]}…)"


def load_public_key(src: str | Path | dict[str, Any] | bytes) -> HybridPublicKey:
    """Read a public key from a file path, its JSON dict, or raw bytes."""
    if isinstance(src, (bytes, bytearray)):
        return HybridPublicKey(bytes(src))
    if isinstance(src, HybridPublicKey):
        return src
    d = src if isinstance(src, dict) else _read_json(src)
    if not isinstance(d, dict):
        raise KeyAccessError(f"not a {ALGORITHM} public key file.")
    if d.get("type") in ("tinker-nb/recipient", "tinker-nb/recipient-identity"):
        raise KeyAccessError("this is a recipient (encryption) key, the wrong kind of key: a trust store holds "
                             "PUBLISHER public keys (the .pub of `tinker-nb keygen publisher`, or `tinker-nb pubkey "
                             "--workspace WS` for a workspace identity).")
    if d.get("algorithm") != ALGORITHM or "public_key" not in d:
        raise KeyAccessError(f"not a {ALGORITHM} public key file.")
    pk = HybridPublicKey(base64.b64decode(d["public_key"]))
    if d.get("key_id") and d["key_id"] != pk.key_id:
        raise KeyAccessError("public key file's key_id does not match its key.")
    return pk


def load_signer(src: str | Path | dict[str, Any], *, passphrase: str) -> HybridSigner:
    """Read a passphrase-protected signing key (KeyAccessError on a wrong passphrase)."""
    d = src if isinstance(src, dict) else _read_json(src)
    if not isinstance(d, dict):
        raise KeyAccessError("not a tinker-nb signing key file.")
    if d.get("type") == "tinker-nb/public-key":
        raise KeyAccessError("this is a publisher PUBLIC key; signing needs the private key file made by "
                             "`tinker-nb keygen publisher` (not its .pub).")
    if d.get("type") in ("tinker-nb/recipient", "tinker-nb/recipient-identity"):
        raise KeyAccessError("this is a recipient (encryption) key, not a publisher signing key.")
    if d.get("type") != "tinker-nb/signing-key" or "protected" not in d:
        raise KeyAccessError("not a tinker-nb signing key file.")
    signer = HybridSigner.from_private_bytes(unprotect(d["protected"], passphrase, label="signing-key"))
    if signer.key_id != d.get("key_id"):
        raise KeyAccessError("signing key file is inconsistent (key id mismatch).")
    return signer


def _read_json(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data: dict[str, Any] = json.loads(p.read_text())
        return data
    except FileNotFoundError:
        raise KeyAccessError(f"key file {p} does not exist.") from None
    except IsADirectoryError:
        raise KeyAccessError(f"key file {p} is a folder; give the key file itself.") from None
    except PermissionError:
        raise KeyAccessError(f"key file {p} is not readable (permission denied).") from None
    except (ValueError, UnicodeDecodeError):
        raise KeyAccessError(f"key file {p} is not valid JSON.") from None
