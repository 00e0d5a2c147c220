"""The workspace's own signing identity (signs ledger checkpoints and, by default, packages).

Generated once per workspace; the private key is stored sealed under a key derived from the workspace
root key (never in clear), in ``<workspace>/identity.json``::

    {"type": "tinker-nb/workspace-identity", "key_id": hex SHA-256(public key),
     "public_key": base64(ML-DSA-65 pk ‖ Ed25519 pk), "sealed": base64(AES-256-GCM nonce ‖ ct ‖ tag)}

:func:`read_workspace_identity` reads the public half without any key (for ``tinker-nb pubkey
--workspace`` and ``audit verify``); it is only as trustworthy as the file it reads, so pin an exported
copy for independent checks.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, KeyAccessError, SignatureError
from ..fsio import atomic_write
from .aead import open_sealed, seal
from .keys import Keystore
from .signing import HybridPublicKey, HybridSigner

__all__ = ["IDENTITY_FILE", "read_workspace_identity", "workspace_signer"]

IDENTITY_FILE = "identity.json"
_AAD = b"tinker-nb/workspace-identity/v1"
_TYPE = "tinker-nb/workspace-identity"


def _read(path: Path) -> tuple[dict[str, Any], HybridPublicKey]:
    try:
        d = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise KeyAccessError(f"{path} does not exist (the workspace identity is created on first use).") from None
    except IsADirectoryError:
        raise KeyAccessError(f"{path} is a folder, not a workspace identity file.") from None
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{path} is not valid JSON (the workspace identity file is damaged).") from None
    if not isinstance(d, dict) or d.get("type") != _TYPE or not all(isinstance(d.get(k), str)
                                                                   for k in ("key_id", "public_key", "sealed")):
        raise IntegrityError(f"{path} is not a tinker-nb workspace identity (type, key_id, public_key, sealed).")
    try:
        pk = HybridPublicKey(base64.b64decode(d["public_key"], validate=True))
    except (ValueError, binascii.Error, SignatureError):
        raise IntegrityError(f"{path}: malformed public key.") from None
    if pk.key_id != d["key_id"]:
        raise IntegrityError(f"{path}: key_id does not match the public key.")
    return d, pk


def read_workspace_identity(workspace: str | os.PathLike[str]) -> HybridPublicKey:
    """The workspace identity's public key, read from ``identity.json`` (no root key needed)."""
    return _read(Path(workspace) / IDENTITY_FILE)[1]


def workspace_signer(workspace: str | Path, keystore: Keystore) -> HybridSigner:
    path = Path(workspace) / IDENTITY_FILE
    key = keystore.derive_subkey("workspace-signing-identity")
    if path.exists():
        d, pk = _read(path)
        try:
            raw = open_sealed(key, base64.b64decode(d["sealed"], validate=True), aad=_AAD, what="workspace identity")
        except (ValueError, binascii.Error):
            raise IntegrityError(f"{path}: the sealed key is not valid base64.") from None
        signer = HybridSigner.from_private_bytes(raw)
        if signer.key_id != pk.key_id:
            raise IntegrityError(f"{path}: the sealed key does not match the public key.")
        return signer
    signer = HybridSigner.generate()
    d = {"type": _TYPE, "key_id": signer.key_id,
         "public_key": base64.b64encode(signer.public_key().raw).decode(),
         "sealed": base64.b64encode(seal(key, signer._private_bytes(), aad=_AAD)).decode()}
    # Publish with link(2), which never replaces: two processes creating the identity at once agree on one.
    tmp = path.with_name(f".{IDENTITY_FILE}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    atomic_write(tmp, json.dumps(d, indent=1).encode())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return workspace_signer(workspace, keystore)
    finally:
        tmp.unlink(missing_ok=True)
    return signer
