"""The workspace's own signing identity (signs ledger checkpoints and, by default, packages).

Generated once per workspace; the private key is stored sealed under a key derived from the workspace
root key (never in clear), in ``<workspace>/identity.json``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from .aead import open_sealed, seal
from .keys import Keystore, atomic_write
from .signing import HybridSigner

__all__ = ["workspace_signer"]

_AAD = b"tinker-nb/workspace-identity/v1"


def workspace_signer(workspace: str | Path, keystore: Keystore) -> HybridSigner:
    path = Path(workspace) / "identity.json"
    key = keystore.derive_subkey("workspace-signing-identity")
    if path.exists():
        d = json.loads(path.read_text())
        raw = open_sealed(key, base64.b64decode(d["sealed"]), aad=_AAD, what="workspace identity")
        return HybridSigner.from_private_bytes(raw)
    signer = HybridSigner.generate()
    d = {"type": "tinker-nb/workspace-identity", "key_id": signer.key_id,
         "public_key": base64.b64encode(signer.public_key().raw).decode(),
         "sealed": base64.b64encode(seal(key, signer._private_bytes(), aad=_AAD)).decode()}
    atomic_write(path, json.dumps(d, indent=1).encode())
    return signer
