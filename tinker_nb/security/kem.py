"""Sealing a key to a recipient: HPKE (RFC 9180) with the X-Wing hybrid KEM (ML-KEM-768 + X25519).

Suite: KEM ``MLKEM768_X25519`` (0x647A), KDF HKDF-SHA256, AEAD AES-256-GCM, base mode, from
``cryptography.hazmat.primitives.hpke``. A sealed value is ``enc (1120 B) ‖ ciphertext``. Associated
data is bound through HPKE's ``info`` (we append the caller's ``aad`` to it).

Identity layout (private): ML-KEM-768 seed (64 B) ‖ X25519 private key (32 B).
Public key: ML-KEM-768 public key (1184 B) ‖ X25519 public key (32 B); key id = hex SHA-256(public key).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ..errors import IntegrityError, KeyAccessError
from .passphrase import protect, unprotect

__all__ = ["RecipientIdentity", "RecipientPublicKey", "seal", "load_recipient", "load_identity", "SUITE_NAME"]

SUITE_NAME = "HPKE-Base(MLKEM768-X25519, HKDF-SHA256, AES-256-GCM)"
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
MLKEM_PK, X_PK = 1184, 32


def _info(info: bytes, aad: bytes) -> bytes:
    return b"tinker-nb/hpke/v1|" + len(info).to_bytes(2, "big") + info + aad


class RecipientPublicKey:
    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != MLKEM_PK + X_PK:
            raise KeyAccessError(f"a recipient public key is {MLKEM_PK + X_PK} bytes.")
        self.raw = bytes(raw)
        try:
            self._pub = hpke.MLKEM768X25519PublicKey(MLKEM768PublicKey.from_public_bytes(self.raw[:MLKEM_PK]),
                                                     X25519PublicKey.from_public_bytes(self.raw[MLKEM_PK:]))
        except (ValueError, TypeError):
            raise KeyAccessError("malformed recipient public key.") from None

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def to_dict(self) -> dict:
        return {"type": "tinker-nb/recipient", "suite": SUITE_NAME, "key_id": self.key_id,
                "public_key": base64.b64encode(self.raw).decode()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecipientPublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"RecipientPublicKey(key_id={self.key_id[:16]}…)"


def seal(recipient: RecipientPublicKey, plaintext: bytes, *, info: bytes, aad: bytes = b"") -> bytes:
    """HPKE-seal ``plaintext`` to ``recipient``; only the matching identity can open it."""
    return _SUITE.encrypt(plaintext, recipient._pub, info=_info(info, aad))


class RecipientIdentity:
    """A recipient's private key (ML-KEM-768 + X25519)."""

    def __init__(self, mlkem_seed: bytes, x25519_raw: bytes) -> None:
        if len(mlkem_seed) != 64 or len(x25519_raw) != 32:
            raise KeyAccessError("malformed recipient identity.")
        self._mlkem = MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
        self._x = X25519PrivateKey.from_private_bytes(x25519_raw)
        self._seed = mlkem_seed
        self._priv = hpke.MLKEM768X25519PrivateKey(self._mlkem, self._x)
        self._pub = RecipientPublicKey(self._mlkem.public_key().public_bytes_raw()
                                       + self._x.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def generate(cls) -> "RecipientIdentity":
        return cls(os.urandom(64), os.urandom(32))

    def public_key(self) -> RecipientPublicKey:
        return self._pub

    @property
    def key_id(self) -> str:
        return self._pub.key_id

    def open(self, sealed: bytes, *, info: bytes, aad: bytes = b"") -> bytes:
        try:
            return _SUITE.decrypt(sealed, self._priv, info=_info(info, aad))
        except Exception:  # noqa: BLE001 - InvalidTag / ValueError from HPKE: never leak details
            raise KeyAccessError("cannot open the sealed key with this identity (not a recipient, or altered).") from None

    def _private_bytes(self) -> bytes:
        return self._seed + self._x.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def to_protected_dict(self, passphrase: str) -> dict:
        return {"type": "tinker-nb/recipient-identity", "suite": SUITE_NAME, "key_id": self.key_id,
                "public_key": base64.b64encode(self._pub.raw).decode(),
                "protected": protect(self._private_bytes(), passphrase, label="recipient-identity")}

    def save(self, path: str | Path, *, passphrase: str) -> None:
        from ..fsio import atomic_write

        atomic_write(Path(path), (json.dumps(self.to_protected_dict(passphrase), indent=1) + "\n").encode())

    def __repr__(self) -> str:
        return f"RecipientIdentity(key_id={self.key_id[:16]}…)"


def load_recipient(src: str | Path | dict | RecipientPublicKey) -> RecipientPublicKey:
    """Read a recipient public key (file, dict, or an identity/public key object)."""
    if isinstance(src, RecipientPublicKey):
        return src
    if isinstance(src, RecipientIdentity):
        return src.public_key()
    d = src if isinstance(src, dict) else _read(src)
    if "public_key" not in d or d.get("suite") != SUITE_NAME:
        raise KeyAccessError("not a tinker-nb recipient public key.")
    pk = RecipientPublicKey(base64.b64decode(d["public_key"]))
    if d.get("key_id") and d["key_id"] != pk.key_id:
        raise KeyAccessError("recipient key file's key_id does not match its key.")
    return pk


def load_identity(src: str | Path | dict, *, passphrase: str) -> RecipientIdentity:
    d = src if isinstance(src, dict) else _read(src)
    if d.get("type") != "tinker-nb/recipient-identity":
        raise KeyAccessError("not a tinker-nb recipient identity file.")
    raw = unprotect(d["protected"], passphrase, label="recipient-identity")
    ident = RecipientIdentity(raw[:64], raw[64:])
    if ident.key_id != d.get("key_id"):
        raise KeyAccessError("recipient identity file is inconsistent (key id mismatch).")
    return ident


def _read(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise KeyAccessError(f"key file {path} does not exist.") from None
    except (ValueError, UnicodeDecodeError):
        raise KeyAccessError(f"key file {path} is not valid JSON.") from None


_ = IntegrityError  # re-exported for callers that catch either
