"""Passphrase → key derivation with Argon2id (OWASP parameters), and passphrase-protected key blobs."""

from __future__ import annotations

import base64
import json
import os

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from ..errors import KeyAccessError
from .aead import open_sealed, seal

__all__ = ["derive_key", "ARGON2_PARAMS", "protect", "unprotect"]

# OWASP Password Storage Cheat Sheet, Argon2id option 2: m=19 MiB, t=2, p=1.
ARGON2_PARAMS = {"memory_cost": 19 * 1024, "iterations": 2, "lanes": 1, "length": 32}


def derive_key(passphrase: str, salt: bytes, params: dict | None = None) -> bytes:
    """Argon2id(passphrase, salt) → 32-byte key."""
    if not isinstance(passphrase, str) or not passphrase:
        raise KeyAccessError("a non-empty passphrase is required.")
    p = dict(ARGON2_PARAMS, **(params or {}))
    return Argon2id(salt=salt, length=p["length"], iterations=p["iterations"], lanes=p["lanes"],
                    memory_cost=p["memory_cost"]).derive(passphrase.encode("utf-8"))


def protect(secret: bytes, passphrase: str, *, label: str) -> dict:
    """Encrypt ``secret`` under an Argon2id-derived key; returns a JSON-able dict (no secret in clear)."""
    salt = os.urandom(16)
    key = derive_key(passphrase, salt)
    aad = f"tinker-nb/protected/{label}".encode()
    return {"kdf": "argon2id", "params": ARGON2_PARAMS, "salt": base64.b64encode(salt).decode(),
            "label": label, "sealed": base64.b64encode(seal(key, secret, aad=aad)).decode()}


def unprotect(blob: dict, passphrase: str, *, label: str) -> bytes:
    """Inverse of :func:`protect`; KeyAccessError on a wrong passphrase or a blob for another purpose."""
    try:
        if blob.get("kdf") != "argon2id" or blob.get("label") != label:
            raise KeyAccessError(f"this file is not a passphrase-protected {label}.")
        key = derive_key(passphrase, base64.b64decode(blob["salt"]), blob.get("params"))
        from ..errors import IntegrityError

        try:
            return open_sealed(key, base64.b64decode(blob["sealed"]), aad=f"tinker-nb/protected/{label}".encode())
        except IntegrityError:
            raise KeyAccessError(f"wrong passphrase for this {label} (or the file was altered).") from None
    except (KeyError, ValueError, TypeError, json.JSONDecodeError):
        raise KeyAccessError(f"malformed protected {label}.") from None
