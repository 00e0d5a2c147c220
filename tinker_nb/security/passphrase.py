"""Passphrase → key derivation with Argon2id (OWASP parameters), and passphrase-protected key blobs."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from ..errors import IntegrityError, KeyAccessError
from .aead import open_sealed, seal

__all__ = [
    "ARGON2_FLOOR",
    "ARGON2_MAX",
    "ARGON2_PARAMS",
    "check_argon2_params",
    "derive_key",
    "protect",
    "unprotect",
]

# OWASP Password Storage Cheat Sheet, Argon2id option 2: m=19 MiB, t=2, p=1.
ARGON2_PARAMS = {"memory_cost": 19 * 1024, "iterations": 2, "lanes": 1, "length": 32}
# The OWASP table of equal-strength Argon2id settings (memory in KiB, iterations): a stored setting is
# accepted only if it is at least as strong as one row in both memory and iterations.
ARGON2_FLOOR = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))
# Ceilings, so that a planted file cannot exhaust memory or time: 1 GiB, 16 passes, 16 lanes.
ARGON2_MAX = {"memory_cost": 1 << 20, "iterations": 16, "lanes": 16}
SALT_MIN, SALT_MAX = 16, 64


def check_argon2_params(params: object, *, what: str = "key file") -> dict[str, Any]:
    """Validate stored Argon2id parameters: exact keys, integers, OWASP floor, ceilings; IntegrityError otherwise.

    A downgraded setting (e.g. m=8 KiB, t=1) would make offline guessing cheap; a huge one would
    exhaust memory. Both are refused before any derivation runs.
    """
    if not isinstance(params, dict) or set(params) != set(ARGON2_PARAMS):
        raise IntegrityError(f"{what}: Argon2id parameters must be exactly {sorted(ARGON2_PARAMS)}.")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in params.values()):
        raise IntegrityError(f"{what}: Argon2id parameters must be integers.")
    m, t, p, n = params["memory_cost"], params["iterations"], params["lanes"], params["length"]
    if n != 32:
        raise IntegrityError(f"{what}: Argon2id output length must be 32 bytes, got {n}.")
    if not (1 <= p <= ARGON2_MAX["lanes"] and m <= ARGON2_MAX["memory_cost"] and t <= ARGON2_MAX["iterations"]):
        raise IntegrityError(f"{what}: Argon2id parameters m={m} KiB, t={t}, p={p} exceed the maximum "
                             f"(m ≤ {ARGON2_MAX['memory_cost']} KiB, t ≤ {ARGON2_MAX['iterations']}, "
                             f"1 ≤ p ≤ {ARGON2_MAX['lanes']}); the file was altered.")
    if m < 8 * p or not any(m >= fm and t >= ft for fm, ft in ARGON2_FLOOR):
        raise IntegrityError(f"{what}: Argon2id parameters m={m} KiB, t={t} are below the OWASP minimum "
                             "(e.g. m=19456 KiB, t=2); refusing a downgraded key derivation (the file was altered).")
    return dict(params)


def _check_salt(salt: bytes, what: str) -> bytes:
    if not isinstance(salt, (bytes, bytearray)) or not SALT_MIN <= len(salt) <= SALT_MAX:
        raise IntegrityError(f"{what}: the Argon2id salt must be {SALT_MIN} to {SALT_MAX} bytes.")
    return bytes(salt)


def derive_key(passphrase: str, salt: bytes, params: dict[str, Any] | None = None, *, what: str = "key file") -> bytes:
    """Argon2id(passphrase, salt) → 32-byte key. Stored ``params`` are checked by :func:`check_argon2_params`."""
    if not isinstance(passphrase, str) or not passphrase:
        raise KeyAccessError("a non-empty passphrase is required.")
    p = check_argon2_params(params, what=what) if params is not None else dict(ARGON2_PARAMS)
    salt = _check_salt(salt, what)
    return Argon2id(salt=salt, length=p["length"], iterations=p["iterations"], lanes=p["lanes"],
                    memory_cost=p["memory_cost"]).derive(passphrase.encode("utf-8"))


def protect(secret: bytes, passphrase: str, *, label: str) -> dict[str, Any]:
    """Encrypt ``secret`` under an Argon2id-derived key; returns a JSON-able dict (no secret in clear)."""
    salt = os.urandom(16)
    key = derive_key(passphrase, salt)
    aad = f"tinker-nb/protected/{label}".encode()
    return {"kdf": "argon2id", "params": ARGON2_PARAMS, "salt": base64.b64encode(salt).decode(),
            "label": label, "sealed": base64.b64encode(seal(key, secret, aad=aad)).decode()}


def unprotect(blob: dict[str, Any], passphrase: str, *, label: str) -> bytes:
    """Inverse of :func:`protect`; KeyAccessError on a wrong passphrase or a blob for another purpose."""
    try:
        if not isinstance(blob, dict) or blob.get("kdf") != "argon2id" or blob.get("label") != label:
            raise KeyAccessError(f"this file is not a passphrase-protected {label}.")
        key = derive_key(passphrase, base64.b64decode(blob["salt"], validate=True), blob["params"],
                         what=f"protected {label}")
        try:
            return open_sealed(key, base64.b64decode(blob["sealed"]), aad=f"tinker-nb/protected/{label}".encode())
        except IntegrityError:
            raise KeyAccessError(f"wrong passphrase for this {label} (or the file was altered).") from None
    except (KeyError, ValueError, TypeError, json.JSONDecodeError):
        raise KeyAccessError(f"malformed protected {label} (the key file is damaged; restore it from a "
                             "backup).") from None
