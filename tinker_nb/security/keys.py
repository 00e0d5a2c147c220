"""Tenant keystore: a root key, per-tenant KEKs with versions, DEK wrapping, rotation and shredding.

Key hierarchy::

    root key (Argon2id(passphrase) | key file | env var)   -- never stored in the workspace
      └─ tenant KEK v1, v2, ... (AES-256, random)          -- stored sealed under the root key
           └─ artifact DEK (AES-256, one per artifact)     -- stored sealed under a KEK (in the store index)

``keystore.json`` in the workspace holds the KEKs sealed with AES-256-GCM under the root key, with
associated data binding tenant, key id and version, plus a check value that detects a wrong root key.
Destroying a tenant erases its sealed KEKs: every DEK they wrapped, hence every artifact of that tenant,
becomes unrecoverable (crypto-shredding).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

try:  # POSIX advisory locks serialise keystore updates across processes (two kernels, the CLI)
    import fcntl
except ImportError:  # pragma: no cover - Windows: thread lock only
    fcntl = None

from ..errors import ConfigError, IntegrityError, KeyAccessError
from .aead import new_key, open_sealed, seal
from .passphrase import ARGON2_PARAMS, derive_key

__all__ = ["Keystore", "WrappedKey", "atomic_write"]

KEYSTORE_FILE = "keystore.json"
CHECK_AAD = b"tinker-nb/keystore/root-check/v1"
ENV_VAR = "TINKER_NB_ROOT_KEY"


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename, fsync folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class WrappedKey:
    """A DEK sealed under a tenant KEK version (safe to store anywhere)."""

    tenant: str
    key_id: str
    version: int
    blob: bytes

    def to_dict(self) -> dict:
        return {"tenant": self.tenant, "key_id": self.key_id, "version": self.version,
                "blob": base64.b64encode(self.blob).decode()}

    @classmethod
    def from_dict(cls, d: dict) -> "WrappedKey":
        return cls(d["tenant"], d["key_id"], int(d["version"]), base64.b64decode(d["blob"]))

    def __repr__(self) -> str:
        return f"WrappedKey(tenant={self.tenant!r}, key_id={self.key_id!r}, version={self.version})"


def _key_dir() -> Path:
    return Path(os.environ.get("TINKER_NB_KEY_DIR", Path.home() / ".config" / "tinker_nb"))


def _parse_root(text: str, source: str) -> bytes:
    text = text.strip()
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == 32:
            return key
    raise KeyAccessError(f"the root key from {source} must be 32 bytes, hex or base64 encoded.")


class Keystore:
    """Per-tenant KEKs sealed under a root key. Open it with :meth:`Keystore.open`."""

    def __init__(self, path: Path, *, root_key: bytes, source: str) -> None:
        self.path = Path(path)
        self._root = root_key
        self.source = source
        self._lock = threading.RLock()
        self._data = json.loads(self.path.read_text())

    def __repr__(self) -> str:
        return f"Keystore(path={str(self.path)!r}, source={self.source!r}, tenants={self.tenants()})"

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, workspace: str | os.PathLike, *, passphrase: str | None = None,
             key_file: str | os.PathLike | None = None, env_var: str = ENV_VAR) -> "Keystore":
        """Open (or create) the workspace keystore.

        Root key sources, in order: ``passphrase`` (Argon2id with the stored salt), ``key_file``, the
        ``TINKER_NB_ROOT_KEY`` environment variable, else a per-workspace key file kept OUTSIDE the
        workspace in ``$TINKER_NB_KEY_DIR`` (default ``~/.config/tinker_nb``), created with mode 0600.
        """
        ws = Path(workspace)
        ws.mkdir(parents=True, exist_ok=True)
        path = ws / KEYSTORE_FILE
        data = json.loads(path.read_text()) if path.exists() else None
        if passphrase is not None:
            kdf = (data or {}).get("kdf") or {"type": "argon2id", "salt": base64.b64encode(os.urandom(16)).decode(),
                                               "params": ARGON2_PARAMS}
            if kdf.get("type") != "argon2id":
                raise KeyAccessError("this workspace's root key is not passphrase-based; open it with the key file "
                                     "or TINKER_NB_ROOT_KEY it was created with.")
            root = derive_key(passphrase, base64.b64decode(kdf["salt"]), kdf.get("params"))
            source = "passphrase"
        elif key_file is not None:
            kf = Path(key_file)
            if not kf.exists() and data is None:
                # A new workspace with a named key file: make the root key there (0600), for automation.
                kf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                atomic_write(kf, secrets.token_bytes(32).hex().encode() + b"\n", mode=0o600)
            elif not kf.exists():
                raise KeyAccessError(f"key file {kf} does not exist, and this workspace's keys cannot be opened "
                                     "without the key file it was created with; restore it from your backup.")
            root = _parse_root(kf.read_text(), f"key file {kf}")
            kdf, source = {"type": "key-file"}, "key-file"
        elif os.environ.get(env_var):
            root = _parse_root(os.environ[env_var], f"${env_var}")
            kdf, source = {"type": "env"}, "env"
        else:
            if data is not None and data["kdf"]["type"] == "argon2id":
                raise KeyAccessError("this workspace is protected by a passphrase: pass passphrase=... "
                                     "(or set it in the %tinker keys magic).")
            ws_id = (data or {}).get("workspace_id") or secrets.token_hex(16)
            kf = _key_dir() / f"{ws_id}.key"
            if kf.exists():
                root = _parse_root(kf.read_text(), f"key file {kf}")
            elif data is not None:
                raise KeyAccessError(f"the workspace key file {kf} is missing: the keys of this workspace cannot be "
                                     "opened without it.")
            else:
                kf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                root = secrets.token_bytes(32)
                atomic_write(kf, root.hex().encode() + b"\n", mode=0o600)
            kdf = {"type": "default-key-file", "workspace_id": ws_id}
            source = "default-key-file"
            if data is None:
                data = {"workspace_id": ws_id}
        if data is None or "check" not in data:
            data = {**(data or {}), "format": "tinker-nb/keystore/v1", "kdf": kdf, "tenants": {},
                    "workspace_id": (data or {}).get("workspace_id") or kdf.get("workspace_id") or secrets.token_hex(16),
                    "check": base64.b64encode(seal(root, b"ok", aad=CHECK_AAD)).decode()}
            atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode())
        else:
            try:
                open_sealed(root, base64.b64decode(data["check"]), aad=CHECK_AAD, what="root key check")
            except IntegrityError:
                raise KeyAccessError("wrong passphrase or root key for this workspace.") from None
        return cls(path, root_key=root, source=source)

    # ------------------------------------------------------------------ persistence
    def _save(self) -> None:
        atomic_write(self.path, json.dumps(self._data, indent=1, sort_keys=True).encode())

    @contextlib.contextmanager
    def _locked(self, *, shared: bool = False):
        """This process's lock plus an flock on ``keystore.lock``, then a fresh read of keystore.json.

        Exclusive for read-modify-write (create, rotate, retire, destroy), shared for wrap/unwrap, so a
        kernel never wraps under a version another process retired and two writers never lose a version.
        """
        with self._lock:
            with open(self.path.parent / "keystore.lock", "a+b") as fh:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                try:
                    self._reload()
                    yield
                finally:
                    if fcntl is not None:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _reload(self) -> None:
        self._data = json.loads(self.path.read_text())

    @staticmethod
    def _aad(tenant: str, key_id: str, version: int) -> bytes:
        return f"tinker-nb/kek/v1|{tenant}|{key_id}|{version}".encode()

    def _tenant(self, tenant: str) -> dict:
        t = self._data["tenants"].get(tenant)
        if t is None:
            raise KeyAccessError(f"tenant {tenant!r} has no keys in this workspace.")
        if t.get("destroyed"):
            raise KeyAccessError(f"tenant {tenant!r} was crypto-shredded: its keys are destroyed and its artifacts "
                                 "are unrecoverable.")
        return t

    def _kek(self, tenant: str, version: int) -> tuple[str, bytes]:
        t = self._tenant(tenant)
        v = t["versions"].get(str(version))
        if v is None or v.get("status") == "destroyed":
            raise KeyAccessError(f"key version {version} of tenant {tenant!r} is not available.")
        kek = open_sealed(self._root, base64.b64decode(v["sealed"]), aad=self._aad(tenant, v["key_id"], version),
                          what="tenant key")
        return v["key_id"], kek

    # ------------------------------------------------------------------ tenants
    def tenants(self) -> list[str]:
        return sorted(k for k, v in self._data["tenants"].items() if not v.get("destroyed"))

    def create_tenant(self, tenant: str) -> dict:
        """Create a tenant with a fresh KEK version 1."""
        if not isinstance(tenant, str) or not tenant.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"tenant must be letters, digits, '-' or '_', got {tenant!r}.")
        with self._locked():
            existing = self._data["tenants"].get(tenant)
            if existing and not existing.get("destroyed"):
                raise ConfigError(f"tenant {tenant!r} already exists.")
            self._data["tenants"][tenant] = {"primary": 0, "versions": {}, "created": time.time()}
            self._add_version(tenant)
            self._save()
        return self.key_info(tenant)

    def _add_version(self, tenant: str) -> int:
        t = self._data["tenants"][tenant]
        version = max([int(v) for v in t["versions"]] + [0]) + 1
        kek = new_key()
        key_id = hashlib.sha256(b"tinker-nb/kek-id|" + tenant.encode() + b"|" + kek).hexdigest()[:16]
        t["versions"][str(version)] = {
            "key_id": key_id, "status": "active", "created": time.time(),
            "sealed": base64.b64encode(seal(self._root, kek, aad=self._aad(tenant, key_id, version))).decode()}
        t["primary"] = version
        return version

    def key_info(self, tenant: str) -> dict:
        """Public facts about a tenant's keys (ids, versions, status): never key material."""
        t = self._tenant(tenant)
        return {"tenant": tenant, "primary_version": t["primary"],
                "versions": {int(k): {"key_id": v["key_id"], "status": v["status"], "created": v["created"]}
                             for k, v in t["versions"].items()}}

    # ------------------------------------------------------------------ DEKs
    def wrap_dek(self, tenant: str, dek: bytes, *, aad: bytes) -> WrappedKey:
        """Seal ``dek`` under the tenant's primary KEK; ``aad`` binds it to its artifact."""
        with self._locked(shared=True):
            version = self._tenant(tenant)["primary"]
            key_id, kek = self._kek(tenant, version)
        blob = seal(kek, dek, aad=self._dek_aad(tenant, key_id, version, aad))
        return WrappedKey(tenant, key_id, version, blob)

    @staticmethod
    def _dek_aad(tenant: str, key_id: str, version: int, aad: bytes) -> bytes:
        return f"tinker-nb/dek/v1|{tenant}|{key_id}|{version}|".encode() + aad

    def unwrap_dek(self, tenant: str, wrapped: WrappedKey, *, aad: bytes) -> bytes:
        """Open a wrapped DEK; KeyAccessError for another tenant, a destroyed key or a wrong binding."""
        if wrapped.tenant != tenant:
            raise KeyAccessError(f"this key belongs to tenant {wrapped.tenant!r}, not {tenant!r}.")
        with self._locked(shared=True):
            key_id, kek = self._kek(tenant, wrapped.version)
        if key_id != wrapped.key_id:
            raise KeyAccessError("the wrapped key names a key id this tenant does not have.")
        try:
            return open_sealed(kek, wrapped.blob, aad=self._dek_aad(tenant, key_id, wrapped.version, aad),
                               what="wrapped data key")
        except IntegrityError:
            raise KeyAccessError("the data key cannot be unwrapped: it is bound to another artifact or tenant, "
                                 "or it was altered.") from None

    def rewrap(self, tenant: str, wrapped: WrappedKey, *, aad: bytes) -> WrappedKey:
        """Re-seal a DEK under the current primary KEK (rotation; the data itself is untouched)."""
        return self.wrap_dek(tenant, self.unwrap_dek(tenant, wrapped, aad=aad), aad=aad)

    # ------------------------------------------------------------------ lifecycle
    def rotate(self, tenant: str) -> int:
        """Make a new KEK version primary; old versions stay usable until retired. Returns the new version."""
        with self._locked():
            self._tenant(tenant)
            v = self._add_version(tenant)
            self._save()
        return v

    def retire(self, tenant: str, version: int) -> None:
        """Destroy one old KEK version (rewrap its DEKs first: ArtifactStore.rotate does)."""
        with self._locked():
            t = self._tenant(tenant)
            if int(version) == t["primary"]:
                raise ConfigError("cannot retire the primary key version; rotate first.")
            v = t["versions"].get(str(version))
            if v is None:
                raise ConfigError(f"tenant {tenant!r} has no key version {version}.")
            v["status"], v["sealed"] = "destroyed", ""
            self._save()

    def destroy_tenant(self, tenant: str) -> None:
        """Crypto-shredding: erase every KEK of ``tenant``; all its artifacts become unrecoverable."""
        with self._locked():
            self._tenant(tenant)
            self._data["tenants"][tenant] = {"destroyed": True, "destroyed_at": time.time(), "versions": {}}
            self._save()

    def derive_subkey(self, label: str) -> bytes:
        """A 32-byte key derived from the root key for a named workspace purpose (e.g. the signing identity)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(hashes.SHA256(), 32, salt=b"tinker-nb/subkey/v1", info=label.encode()).derive(self._root)
