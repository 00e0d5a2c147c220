"""Sealing a key to a recipient: HPKE (RFC 9180) with the X-Wing hybrid KEM (ML-KEM-768 + X25519).

Suite: KEM ``MLKEM768_X25519`` (0x647A), KDF HKDF-SHA256, AEAD AES-256-GCM, base mode, from
``cryptography.hazmat.primitives.hpke``. A sealed value is ``enc (1120 B) ‖ ciphertext``. Associated
data is bound through HPKE's ``info`` (we append the caller's ``aad`` to it).

Identity (private key): the 32-byte X-Wing seed. It expands as X-Wing specifies: SHAKE256(seed, 96 bytes)
= ML-KEM-768 seed d ‖ z (64 B) ‖ X25519 private key (32 B). Files written before the seed form hold
those 96 expanded bytes instead; they still load (the length tells the forms apart).
Public key: ML-KEM-768 public key (1184 B) ‖ X25519 public key (32 B); key id = hex SHA-256(public key).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ..errors import KeyAccessError
from .passphrase import protect, unprotect

__all__ = ["SUITE_NAME", "RecipientIdentity", "RecipientPublicKey", "load_identity", "load_recipient", "seal"]

SUITE_NAME = "HPKE-Base(MLKEM768-X25519, HKDF-SHA256, AES-256-GCM)"
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
MLKEM_PK, X_PK = 1184, 32
XWING_SEED, EXPANDED = 32, 96


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

    def to_dict(self) -> dict[str, Any]:
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

    def __init__(self, mlkem_seed: bytes, x25519_raw: bytes, *, xwing_seed: bytes | None = None) -> None:
        if len(mlkem_seed) != 64 or len(x25519_raw) != 32:
            raise KeyAccessError("malformed recipient identity.")
        self._xwing_seed = xwing_seed
        self._mlkem = MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
        self._x = X25519PrivateKey.from_private_bytes(x25519_raw)
        self._seed = mlkem_seed
        self._priv = hpke.MLKEM768X25519PrivateKey(self._mlkem, self._x)
        self._pub = RecipientPublicKey(self._mlkem.public_key().public_bytes_raw()
                                       + self._x.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def from_seed(cls, seed: bytes) -> RecipientIdentity:
        """The identity of a 32-byte X-Wing seed: SHAKE256(seed, 96) = ML-KEM d ‖ z ‖ X25519 key."""
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != XWING_SEED:
            raise KeyAccessError(f"an X-Wing seed is {XWING_SEED} bytes.")
        exp = hashlib.shake_256(bytes(seed)).digest(EXPANDED)
        return cls(exp[:64], exp[64:], xwing_seed=bytes(seed))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> RecipientIdentity:
        """32 bytes (X-Wing seed, current form) or 96 bytes (expanded ML-KEM seed ‖ X25519 key, older files)."""
        if isinstance(raw, (bytes, bytearray)) and len(raw) == XWING_SEED:
            return cls.from_seed(raw)
        if isinstance(raw, (bytes, bytearray)) and len(raw) == EXPANDED:
            return cls(bytes(raw[:64]), bytes(raw[64:]))
        raise KeyAccessError(f"a recipient private key is {XWING_SEED} bytes (X-Wing seed) or {EXPANDED} bytes "
                             "(expanded, older files).")

    @classmethod
    def generate(cls) -> RecipientIdentity:
        return cls.from_seed(os.urandom(XWING_SEED))

    def public_key(self) -> RecipientPublicKey:
        return self._pub

    @property
    def key_id(self) -> str:
        return self._pub.key_id

    def open(self, sealed: bytes, *, info: bytes, aad: bytes = b"") -> bytes:
        try:
            return _SUITE.decrypt(sealed, self._priv, info=_info(info, aad))
        except Exception:  # noqa: BLE001 - InvalidTag / ValueError from HPKE: never leak details
            raise KeyAccessError("cannot open the sealed key with this identity (not a recipient, or "
                                 "altered).") from None

    def _private_bytes(self) -> bytes:
        if self._xwing_seed is not None:
            return self._xwing_seed
        return self._seed + self._x.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def to_protected_dict(self, passphrase: str) -> dict[str, Any]:
        return {"type": "tinker-nb/recipient-identity", "suite": SUITE_NAME, "key_id": self.key_id,
                "private_key_format": "x-wing-seed" if self._xwing_seed is not None else "expanded-96",
                "public_key": base64.b64encode(self._pub.raw).decode(),
                "protected": protect(self._private_bytes(), passphrase, label="recipient-identity")}

    def save(self, path: str | Path, *, passphrase: str) -> None:
        from ..fsio import atomic_write

        atomic_write(Path(path), (json.dumps(self.to_protected_dict(passphrase), indent=1) + "\n").encode())

    def __repr__(self) -> str:
        return f"RecipientIdentity(key_id={self.key_id[:16]}…)"


def load_recipient(src: str | Path | dict[str, Any] | RecipientPublicKey) -> RecipientPublicKey:
    """Read a recipient public key (file, dict, or an identity/public key object)."""
    if isinstance(src, RecipientPublicKey):
        return src
    if isinstance(src, RecipientIdentity):
        return src.public_key()
    d = src if isinstance(src, dict) else _read(src)
    if not isinstance(d, dict):
        raise KeyAccessError("not a tinker-nb recipient public key file.")
    if d.get("type") == "tinker-nb/recipient-identity":
        raise KeyAccessError("this is a recipient's PRIVATE identity file; give the public key (the .pub file "
                             "`tinker-nb keygen recipient` wrote next to it, or `tinker-nb pubkey FILE`).")
    if d.get("type") in ("tinker-nb/public-key", "tinker-nb/signing-key", "tinker-nb/workspace-identity") \
            or d.get("algorithm") == "MLDSA65-Ed25519-SHA512":
        raise KeyAccessError("this is a publisher (signing) key, not a recipient key; recipients are the "
                             "public keys made by `tinker-nb keygen recipient`.")
    if "public_key" not in d or d.get("suite") != SUITE_NAME:
        raise KeyAccessError("not a tinker-nb recipient public key.")
    pk = RecipientPublicKey(base64.b64decode(d["public_key"]))
    if d.get("key_id") and d["key_id"] != pk.key_id:
        raise KeyAccessError("recipient key file's key_id does not match its key.")
    return pk


def load_identity(src: str | Path | dict[str, Any], *, passphrase: str) -> RecipientIdentity:
    d = src if isinstance(src, dict) else _read(src)
    if not isinstance(d, dict):
        raise KeyAccessError("not a tinker-nb recipient identity file.")
    if d.get("type") == "tinker-nb/recipient" or d.get("type") == "tinker-nb/signing-key" \
            or d.get("algorithm") == "MLDSA65-Ed25519-SHA512":
        kind = "a recipient PUBLIC key" if d.get("type") == "tinker-nb/recipient" else "a publisher key"
        raise KeyAccessError(f"this is {kind}, not a recipient identity; give the private identity file made by "
                             "`tinker-nb keygen recipient` (not its .pub).")
    if d.get("type") != "tinker-nb/recipient-identity" or "protected" not in d:
        raise KeyAccessError("not a tinker-nb recipient identity file.")
    raw = unprotect(d["protected"], passphrase, label="recipient-identity")
    ident = RecipientIdentity.from_private_bytes(raw)
    if ident.key_id != d.get("key_id"):
        raise KeyAccessError("recipient identity file is inconsistent (key id mismatch).")
    return ident


def _read(path: str | Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return data
    except FileNotFoundError:
        raise KeyAccessError(f"key file {path} does not exist.") from None
    except IsADirectoryError:
        raise KeyAccessError(f"key file {path} is a folder; give the key file itself.") from None
    except PermissionError:
        raise KeyAccessError(f"key file {path} is not readable (permission denied).") from None
    except (ValueError, UnicodeDecodeError):
        raise KeyAccessError(f"key file {path} is not valid JSON.") from None

