"""Tenant keystore: a root key, per-tenant KEKs with versions, DEK wrapping, rotation and shredding.

Key hierarchy::

    workspace root key (Argon2id(passphrase) | key file | env var)   -- never stored in the workspace
      └─ tenant sealing key = root key                                (tenant without its own secret)
         tenant sealing key = HKDF(root ‖ tenant secret, salt, info)  (tenant created with secret=)
           └─ tenant KEK v1, v2, ... (AES-256, random)  -- stored sealed under the tenant sealing key
                └─ artifact DEK (AES-256, one per artifact) -- stored sealed under a KEK (in the store index)

``keystore.json`` in the workspace holds the KEKs sealed with AES-256-GCM, with associated data
binding tenant, key id and version, plus check values that detect a wrong root key or tenant secret.
Destroying a tenant erases its sealed KEKs: every DEK they wrapped, hence every artifact of that tenant,
becomes unrecoverable (crypto-shredding).

``keystore.json`` is only ever written by :meth:`Keystore.open` when it does not exist yet, and by the
explicit operations ``create_tenant``, ``rotate``, ``retire`` and ``destroy_tenant`` (the client appends
each of them to the audit ledger). An existing file that is malformed, or whose Argon2id parameters are
below the OWASP floor or above the ceilings, is refused with :class:`IntegrityError` and left as it is.
Each write first writes and re-reads ``keystore.json.bak`` (same content, verified), then replaces
``keystore.json``; both are written atomically (docs/SECURITY.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # POSIX advisory locks serialise keystore updates across processes (two kernels, the CLI)
    import fcntl
except ImportError:  # pragma: no cover - Windows: thread lock only
    fcntl = None  # type: ignore[assignment]  # checked before every use

from ..errors import ConfigError, IntegrityError, KeyAccessError
from ..fsio import atomic_write
from .aead import new_key, open_sealed, seal
from .passphrase import ARGON2_PARAMS, check_argon2_params, derive_key

__all__ = [
    "BACKUP_FILE",
    "ENV_VAR",
    "KEYSTORE_FILE",
    "Keystore",
    "KeystoreInfo",
    "WrappedKey",
    "atomic_write",
    "keystore_info",
    "read_keystore",
]

KEYSTORE_FILE = "keystore.json"
BACKUP_FILE = "keystore.json.bak"
FORMAT = "tinker-nb/keystore/v1"
CHECK_AAD = b"tinker-nb/keystore/root-check/v1"
ENV_VAR = "TINKER_NB_ROOT_KEY"
PASSPHRASE_HINT = ("pass the workspace passphrase (Python: ServiceClient(passphrase=...) or Keystore.open(..., "
                   "passphrase=...); CLI: set $TINKER_NB_WORKSPACE_PASSPHRASE or --workspace-passphrase-env VAR)")
_KDF_TYPES = ("argon2id", "key-file", "env", "default-key-file")


@dataclass(frozen=True)
class WrappedKey:
    """A DEK sealed under a tenant KEK version (safe to store anywhere)."""

    tenant: str
    key_id: str
    version: int
    blob: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "key_id": self.key_id, "version": self.version,
                "blob": base64.b64encode(self.blob).decode()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WrappedKey:
        try:
            return cls(str(d["tenant"]), str(d["key_id"]), int(d["version"]),
                       base64.b64decode(d["blob"], validate=True))
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise IntegrityError("a wrapped data key in the index is malformed (the index was altered).") from None

    def __repr__(self) -> str:
        return f"WrappedKey(tenant={self.tenant!r}, key_id={self.key_id!r}, version={self.version})"


@dataclass(frozen=True)
class KeystoreInfo:
    """Public facts of a workspace keystore (no key material): what the CLI needs before opening it."""

    path: str
    workspace_id: str
    kdf: str  # "argon2id" | "key-file" | "env" | "default-key-file"
    tenants: tuple[str, ...]  # usable tenants
    shredded: tuple[str, ...]  # crypto-shredded tenant names
    tenant_secrets: tuple[str, ...]  # tenants that need their own secret besides the root key

    @property
    def passphrase_protected(self) -> bool:
        return self.kdf == "argon2id"


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


def _b64(value: object, what: str, *, min_len: int = 0) -> bytes:
    if not isinstance(value, str):
        raise IntegrityError(f"{what} must be a base64 string.")
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise IntegrityError(f"{what} is not valid base64.") from None
    if len(raw) < min_len:
        raise IntegrityError(f"{what} is too short.")
    return raw


def _num(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _valid_tenant_name(tenant: object) -> bool:
    return isinstance(tenant, str) and 0 < len(tenant) <= 64 and tenant.replace("-", "").replace("_", "").isalnum() \
        and tenant.isascii()


def validate_keystore(data: object, where: str = KEYSTORE_FILE) -> dict[str, Any]:
    """Check the structure of a parsed keystore document; IntegrityError naming the first bad field."""
    def bad(msg: str) -> IntegrityError:
        return IntegrityError(f"{where} is malformed: {msg}. Nothing was changed; restore the file from "
                              f"{BACKUP_FILE} (a verified copy written with every change) or your backup.")

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    if data.get("format") != FORMAT:
        raise bad(f"'format' must be {FORMAT!r}")
    for k in ("workspace_id", "kdf", "check", "tenants"):
        if k not in data:
            raise bad(f"field {k!r} is missing")
    if not isinstance(data["workspace_id"], str) or not data["workspace_id"] or len(data["workspace_id"]) > 64 \
            or not data["workspace_id"].isalnum():
        raise bad("'workspace_id' must be a short alphanumeric string")
    kdf = data["kdf"]
    if not isinstance(kdf, dict) or kdf.get("type") not in _KDF_TYPES:
        raise bad(f"'kdf.type' must be one of {', '.join(_KDF_TYPES)}")
    if kdf["type"] == "argon2id":
        try:
            check_argon2_params(kdf.get("params"), what=where)
        except IntegrityError as exc:
            raise IntegrityError(f"{exc} Nothing was changed.") from None
        salt = _b64(kdf.get("salt"), f"{where}: kdf.salt", min_len=16)
        if len(salt) > 64:
            raise bad("kdf.salt is longer than 64 bytes")
    _b64(data["check"], f"{where}: check", min_len=28)
    tenants = data["tenants"]
    if not isinstance(tenants, dict):
        raise bad("'tenants' must be an object")
    for name, t in tenants.items():
        if not _valid_tenant_name(name) or not isinstance(t, dict):
            raise bad(f"tenant entry {name!r} is invalid")
        if t.get("destroyed") is True:
            if t.get("versions") not in ({}, None) or not _num(t.get("destroyed_at")):
                raise bad(f"shredded tenant {name!r} must have no key versions and a destruction time")
            continue
        if "destroyed" in t:
            raise bad(f"tenant {name!r}: 'destroyed' must be true or absent")
        versions = t.get("versions")
        if not isinstance(versions, dict) or not versions:
            raise bad(f"tenant {name!r} has no key versions")
        for vk, v in versions.items():
            if not (isinstance(vk, str) and vk.isdigit() and int(vk) >= 1 and str(int(vk)) == vk):
                raise bad(f"tenant {name!r}: key version {vk!r} is not a positive integer")
            if not isinstance(v, dict) or not isinstance(v.get("key_id"), str) or not _num(v.get("created")) \
                    or v.get("status") not in ("active", "destroyed"):
                raise bad(f"tenant {name!r}, key version {vk}: fields key_id, status, created are required")
            if v["status"] == "active":
                _b64(v.get("sealed"), f"{where}: tenant {name!r} key version {vk}", min_len=28 + 32)
            elif v.get("sealed") not in ("", None):
                raise bad(f"tenant {name!r}: destroyed key version {vk} still holds key material")
        p = t.get("primary")
        if not isinstance(p, int) or isinstance(p, bool) or str(p) not in versions \
                or versions[str(p)]["status"] != "active":
            raise bad(f"tenant {name!r}: 'primary' must name an active key version")
        if not _num(t.get("created")):
            raise bad(f"tenant {name!r}: 'created' must be a number")
        sec = t.get("secret")
        if sec is not None:
            if not isinstance(sec, dict) or sec.get("type") not in ("passphrase", "key"):
                raise bad(f"tenant {name!r}: 'secret.type' must be 'passphrase' or 'key'")
            _b64(sec.get("salt"), f"{where}: tenant {name!r} secret salt", min_len=16)
            _b64(sec.get("check"), f"{where}: tenant {name!r} secret check", min_len=28)
            if sec["type"] == "passphrase":
                try:
                    check_argon2_params(sec.get("params"), what=f"{where}: tenant {name!r} secret")
                except IntegrityError as exc:
                    raise IntegrityError(f"{exc} Nothing was changed.") from None
    return data


def read_keystore(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and validate a ``keystore.json`` (IntegrityError if malformed, KeyAccessError if missing)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise KeyAccessError(f"{p} does not exist.") from None
    except IsADirectoryError:
        raise IntegrityError(f"{p} is a folder, not a keystore file.") from None
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{p} is not valid JSON. Nothing was changed; restore it from {BACKUP_FILE} (a verified "
                             "copy written with every change) or your backup.") from None
    return validate_keystore(data, p.name)


def keystore_info(workspace: str | os.PathLike[str]) -> KeystoreInfo:
    """Public facts of a workspace's keystore without opening any key (ConfigError if there is none)."""
    ws = Path(workspace)
    path = ws / KEYSTORE_FILE
    if not path.is_file():
        raise ConfigError(f"{ws} is not a tinker_nb workspace (no {KEYSTORE_FILE}).")
    d = read_keystore(path)
    t = d["tenants"]
    return KeystoreInfo(str(path), d["workspace_id"], d["kdf"]["type"],
                        tuple(sorted(k for k, v in t.items() if not v.get("destroyed"))),
                        tuple(sorted(k for k, v in t.items() if v.get("destroyed"))),
                        tuple(sorted(k for k, v in t.items() if not v.get("destroyed") and v.get("secret"))))


class Keystore:
    """Per-tenant KEKs sealed under a root key. Open it with :meth:`Keystore.open`."""

    def __init__(self, path: Path, *, root_key: bytes, source: str) -> None:
        self.path = Path(path)
        self._root = root_key
        self.source = source
        self._lock = threading.RLock()
        self._tenant_keys: dict[str, bytes] = {}  # unlocked sealing keys of tenants with their own secret
        self._data = read_keystore(self.path)

    def __repr__(self) -> str:
        return f"Keystore(path={str(self.path)!r}, source={self.source!r}, tenants={self.tenants()})"

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, workspace: str | os.PathLike[str], *, passphrase: str | None = None,
             key_file: str | os.PathLike[str] | None = None, env_var: str = ENV_VAR) -> Keystore:
        """Open (or, for a new workspace, create) the workspace keystore.

        Root key sources, in order: ``passphrase`` (Argon2id with the stored salt), ``key_file``, the
        ``TINKER_NB_ROOT_KEY`` environment variable, else a per-workspace key file kept OUTSIDE the
        workspace in ``$TINKER_NB_KEY_DIR`` (default ``~/.config/tinker_nb``), created with mode 0600.
        An existing ``keystore.json`` is validated and never rewritten here.
        """
        ws = Path(workspace)
        ws.mkdir(parents=True, exist_ok=True)
        path = ws / KEYSTORE_FILE
        with _flock(ws, exclusive=True):  # two processes creating one workspace make one keystore
            if not path.exists():
                traces = [n for n in (BACKUP_FILE, "artifacts.sqlite", "identity.json") if (ws / n).exists()]
                if traces:
                    raise IntegrityError(f"{path} is missing but this workspace already has {', '.join(traces)}: "
                                         f"its keys are not re-created silently. Restore {KEYSTORE_FILE} (copy "
                                         f"{BACKUP_FILE} over it, or from your backup); nothing was changed.")
            data = read_keystore(path) if path.exists() else None
            root, kdf, source = cls._root_key(ws, data, passphrase=passphrase, key_file=key_file, env_var=env_var)
            if data is None:
                data = {"format": FORMAT, "kdf": kdf, "tenants": {},
                        "workspace_id": kdf.get("workspace_id") or secrets.token_hex(16),
                        "check": base64.b64encode(seal(root, b"ok", aad=CHECK_AAD)).decode()}
                _write_verified(path, data, root)
            else:
                try:
                    open_sealed(root, base64.b64decode(data["check"]), aad=CHECK_AAD, what="root key check")
                except IntegrityError:
                    raise KeyAccessError("wrong passphrase or root key for this workspace.") from None
        return cls(path, root_key=root, source=source)

    @staticmethod
    def _root_key(ws: Path, data: dict[str, Any] | None, *, passphrase: str | None,
                  key_file: str | os.PathLike[str] | None, env_var: str) -> tuple[bytes, dict[str, Any], str]:
        stored = (data or {}).get("kdf", {}).get("type")
        if passphrase is not None:
            kdf: dict[str, Any]
            if data is None:
                kdf = {"type": "argon2id", "salt": base64.b64encode(os.urandom(16)).decode(),
                       "params": dict(ARGON2_PARAMS)}
            else:
                kdf = data["kdf"]
                if stored != "argon2id":
                    raise KeyAccessError("this workspace's root key is not passphrase-based; open it with the key "
                                         f"file or ${ENV_VAR} it was created with.")
            root = derive_key(passphrase, base64.b64decode(kdf["salt"]), kdf["params"], what=KEYSTORE_FILE)
            return root, kdf, "passphrase"
        if stored == "argon2id":
            raise KeyAccessError(f"this workspace is protected by a passphrase: {PASSPHRASE_HINT}.")
        if key_file is not None:
            kf = Path(key_file)
            if kf.is_dir():
                raise KeyAccessError(f"key file {kf} is a folder; give the path of the root key file.")
            if not kf.exists() and data is None:
                # A new workspace with a named key file: make the root key there (0600), for automation.
                kf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                atomic_write(kf, secrets.token_bytes(32).hex().encode() + b"\n", mode=0o600)
            elif not kf.exists():
                raise KeyAccessError(f"key file {kf} does not exist, and this workspace's keys cannot be opened "
                                     "without the key file it was created with; restore it from your backup.")
            return _parse_root(kf.read_text(), f"key file {kf}"), {"type": "key-file"}, "key-file"
        if os.environ.get(env_var):
            return _parse_root(os.environ[env_var], f"${env_var}"), {"type": "env"}, "env"
        ws_id = (data or {}).get("workspace_id") or secrets.token_hex(16)
        kf = _key_dir() / f"{ws_id}.key"
        if kf.is_file():
            root = _parse_root(kf.read_text(), f"key file {kf}")
        elif data is not None:
            raise KeyAccessError(f"no root key for this workspace: its default key file {kf} is missing. Give the "
                                 f"key file it was created with (Python: key_file=...; CLI: --key-file FILE) or "
                                 f"set ${ENV_VAR}.")
        else:
            kf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            root = secrets.token_bytes(32)
            atomic_write(kf, root.hex().encode() + b"\n", mode=0o600)
        return root, {"type": "default-key-file", "workspace_id": ws_id}, "default-key-file"

    # ------------------------------------------------------------------ persistence
    def _save(self) -> None:
        validate_keystore(self._data)
        _write_verified(self.path, self._data, self._root)

    @contextlib.contextmanager
    def _locked(self, *, shared: bool = False) -> Iterator[None]:
        """This process's lock plus an flock on ``keystore.lock``, then a fresh read of keystore.json.

        Exclusive for read-modify-write (create, rotate, retire, destroy), shared for wrap/unwrap, so a
        kernel never wraps under a version another process retired and two writers never lose a version.
        """
        with self._lock, _flock(self.path.parent, exclusive=not shared):
            self._reload()
            yield

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the keystore's shared lock: no key version can be retired or shredded meanwhile.

        ``ArtifactStore.save`` wraps its DEK and inserts its index row inside this, so a concurrent
        ``retire`` either sees the new row or happens before the wrap (which then uses the new primary).
        """
        return self._locked(shared=True)

    def _reload(self) -> None:
        self._data = read_keystore(self.path)

    @staticmethod
    def _aad(tenant: str, key_id: str, version: int) -> bytes:
        return f"tinker-nb/kek/v1|{tenant}|{key_id}|{version}".encode()

    def _tenant(self, tenant: str) -> dict[str, Any]:
        t: dict[str, Any] | None = self._data["tenants"].get(tenant)
        if t is None:
            raise KeyAccessError(f"tenant {tenant!r} has no keys in this workspace.")
        if t.get("destroyed"):
            raise KeyAccessError(f"tenant {tenant!r} was crypto-shredded: its keys are destroyed and its artifacts "
                                 "are unrecoverable.")
        return t

    def _sealing_key(self, tenant: str) -> bytes:
        t = self._tenant(tenant)
        if not t.get("secret"):
            return self._root
        key = self._tenant_keys.get(tenant)
        if key is None:
            raise KeyAccessError(f"tenant {tenant!r} is protected by its own secret: unlock it first "
                                 f"(Python: keystore.unlock_tenant({tenant!r}, secret); CLI: set "
                                 "$TINKER_NB_TENANT_PASSPHRASE or --tenant-passphrase-env VAR).")
        return key

    def _kek(self, tenant: str, version: int) -> tuple[str, bytes]:
        t = self._tenant(tenant)
        v = t["versions"].get(str(version))
        if v is None or v.get("status") == "destroyed":
            raise KeyAccessError(f"key version {version} of tenant {tenant!r} is not available (retired or never "
                                 "created).")
        try:
            kek = open_sealed(self._sealing_key(tenant), base64.b64decode(v["sealed"]),
                              aad=self._aad(tenant, v["key_id"], version), what="tenant key")
        except IntegrityError:
            raise KeyAccessError(f"key version {version} of tenant {tenant!r} cannot be opened with this root key "
                                 "(it was altered, or moved from another tenant or workspace).") from None
        return v["key_id"], kek

    # ------------------------------------------------------------------ tenant secrets
    @staticmethod
    def _tenant_secret_key(root: bytes, tenant: str, sec: dict[str, Any], secret: str | bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        salt = base64.b64decode(sec["salt"])
        if sec["type"] == "passphrase":
            if not isinstance(secret, str):
                raise KeyAccessError(f"tenant {tenant!r} is protected by a passphrase (a str).")
            s = derive_key(secret, salt, sec["params"], what=f"tenant {tenant!r} secret")
        else:
            if not isinstance(secret, (bytes, bytearray)) or len(secret) != 32:
                raise KeyAccessError(f"tenant {tenant!r} is protected by a 32-byte key.")
            s = bytes(secret)
        return HKDF(hashes.SHA256(), 32, salt=salt, info=b"tinker-nb/tenant-sealing-key/v1|" + tenant.encode()
                    ).derive(root + s)

    @staticmethod
    def _tenant_check_aad(tenant: str) -> bytes:
        return b"tinker-nb/keystore/tenant-check/v1|" + tenant.encode()

    def unlock_tenant(self, tenant: str, secret: str | bytes) -> None:
        """Unlock a tenant created with ``secret=``: its KEKs open only with the root key AND this secret."""
        with self._locked(shared=True):
            t = self._tenant(tenant)
            sec = t.get("secret")
            if not sec:
                raise ConfigError(f"tenant {tenant!r} has no secret of its own; the workspace root key opens it.")
            key = self._tenant_secret_key(self._root, tenant, sec, secret)
            try:
                open_sealed(key, base64.b64decode(sec["check"]), aad=self._tenant_check_aad(tenant),
                            what="tenant secret check")
            except IntegrityError:
                raise KeyAccessError(f"wrong secret for tenant {tenant!r}.") from None
            self._tenant_keys[tenant] = key

    def has_secret(self, tenant: str) -> bool:
        return bool(self._tenant(tenant).get("secret"))

    # ------------------------------------------------------------------ tenants
    def tenants(self) -> list[str]:
        """Usable tenants (crypto-shredded ones excluded; see :meth:`shredded`)."""
        return sorted(k for k, v in self._data["tenants"].items() if not v.get("destroyed"))

    def shredded(self) -> list[str]:
        """Names of crypto-shredded tenants (kept so a name is never silently re-created)."""
        return sorted(k for k, v in self._data["tenants"].items() if v.get("destroyed"))

    def create_tenant(self, tenant: str, *, secret: str | bytes | None = None,
                      recreate: bool = False) -> dict[str, Any]:
        """Create a tenant with a fresh KEK version 1.

        ``secret``: a passphrase (str, Argon2id) or a 32-byte key of the tenant's own; its KEKs are then
        sealed under HKDF(root key ‖ secret), so the workspace root key alone opens nothing of it.
        A crypto-shredded name is refused unless ``recreate=True`` (the new tenant is empty: nothing of
        the shredded one comes back).
        """
        if not _valid_tenant_name(tenant):
            raise ConfigError(f"tenant must be 1-64 ASCII letters, digits, '-' or '_', got {tenant!r}.")
        if secret is not None and not ((isinstance(secret, str) and len(secret) >= 8)
                                       or (isinstance(secret, (bytes, bytearray)) and len(secret) == 32)):
            raise ConfigError("a tenant secret is a passphrase of at least 8 characters or a 32-byte key.")
        with self._locked():
            existing = self._data["tenants"].get(tenant)
            if existing and not existing.get("destroyed"):
                raise ConfigError(f"tenant {tenant!r} already exists.")
            if existing and not recreate:
                when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(existing.get("destroyed_at", 0)))
                raise KeyAccessError(f"tenant {tenant!r} was crypto-shredded on {when}; its checkpoints stay "
                                     "unrecoverable. To start a new, empty tenant under the same name, create it "
                                     "explicitly with recreate=True.")
            entry: dict[str, Any] = {"primary": 0, "versions": {}, "created": time.time()}
            if secret is not None:
                sec: dict[str, Any] = {"type": "passphrase" if isinstance(secret, str) else "key",
                       "salt": base64.b64encode(os.urandom(16)).decode()}
                if isinstance(secret, str):
                    sec["params"] = dict(ARGON2_PARAMS)
                key = self._tenant_secret_key(self._root, tenant, sec, secret)
                sec["check"] = base64.b64encode(seal(key, b"ok", aad=self._tenant_check_aad(tenant))).decode()
                entry["secret"] = sec
                self._tenant_keys[tenant] = key
            self._data["tenants"][tenant] = entry
            self._add_version(tenant)
            self._save()
        return self.key_info(tenant)

    def _add_version(self, tenant: str) -> int:
        t = self._data["tenants"][tenant]
        version = max([int(v) for v in t["versions"]] + [0]) + 1
        kek = new_key()
        key_id = hashlib.sha256(b"tinker-nb/kek-id|" + tenant.encode() + b"|" + kek).hexdigest()[:16]
        sealing = self._root if not t.get("secret") else self._tenant_keys[tenant]
        t["versions"][str(version)] = {
            "key_id": key_id, "status": "active", "created": time.time(),
            "sealed": base64.b64encode(seal(sealing, kek, aad=self._aad(tenant, key_id, version))).decode()}
        t["primary"] = version
        return version

    def key_info(self, tenant: str) -> dict[str, Any]:
        """Public facts about a tenant's keys (ids, versions, status): never key material."""
        t = self._tenant(tenant)
        return {"tenant": tenant, "primary_version": t["primary"], "own_secret": bool(t.get("secret")),
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

    def rewrap(self, tenant: str, wrapped: WrappedKey, *, aad: bytes, new_aad: bytes | None = None) -> WrappedKey:
        """Re-seal a DEK under the current primary KEK (rotation; the data itself is untouched)."""
        return self.wrap_dek(tenant, self.unwrap_dek(tenant, wrapped, aad=aad),
                             aad=aad if new_aad is None else new_aad)

    # ------------------------------------------------------------------ lifecycle
    def rotate(self, tenant: str) -> int:
        """Make a new KEK version primary; old versions stay usable until retired. Returns the new version."""
        with self._locked():
            t = self._tenant(tenant)
            if t.get("secret"):
                self._sealing_key(tenant)  # must be unlocked to seal the new version
            v = self._add_version(tenant)
            self._save()
        return v

    def retire(self, tenant: str, version: int, *, in_use: Callable[[int], int] | None = None) -> None:
        """Destroy one old KEK version (rewrap its DEKs first: ArtifactStore.rotate does).

        ``in_use(version)`` runs under the exclusive lock (no save can wrap or commit meanwhile) and
        returns how many stored DEKs are still wrapped under that version; the retire is refused if any.
        """
        with self._locked():
            t = self._tenant(tenant)
            if not isinstance(version, int) or isinstance(version, bool):
                raise ConfigError(f"key version must be an integer, got {version!r}.")
            v = t["versions"].get(str(version))
            if v is None:
                raise ConfigError(f"tenant {tenant!r} has no key version {version}.")
            if v["status"] == "destroyed":
                return
            still = in_use(version) if in_use is not None else 0
            if still:
                raise ConfigError(f"{still} checkpoint(s) of tenant {tenant!r} are still wrapped under key version "
                                  f"{version}; rotate (which rewraps them) before retiring it.")
            if version == t["primary"]:
                raise ConfigError("cannot retire the primary key version; rotate first.")
            v["status"], v["sealed"] = "destroyed", ""
            self._save()

    def destroy_tenant(self, tenant: str) -> None:
        """Crypto-shredding: erase every KEK of ``tenant``; all its artifacts become unrecoverable."""
        with self._locked():
            self._tenant(tenant)
            self._data["tenants"][tenant] = {"destroyed": True, "destroyed_at": time.time(), "versions": {}}
            self._tenant_keys.pop(tenant, None)
            self._save()

    def derive_subkey(self, label: str) -> bytes:
        """A 32-byte key derived from the root key for a named workspace purpose (e.g. the signing identity)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(hashes.SHA256(), 32, salt=b"tinker-nb/subkey/v1", info=label.encode()).derive(self._root)


@contextlib.contextmanager
def _flock(folder: Path, *, exclusive: bool) -> Iterator[None]:
    with open(Path(folder) / "keystore.lock", "a+b") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_verified(path: Path, data: dict[str, Any], root: bytes) -> None:
    """Write ``keystore.json.bak`` then ``keystore.json`` (same bytes), each atomically; the backup is
    re-read and checked (structure and root-key check value) before the main file is replaced."""
    raw = json.dumps(data, indent=1, sort_keys=True).encode()
    bak = path.with_name(BACKUP_FILE)
    atomic_write(bak, raw)
    back = read_keystore(bak)
    if back != data:  # pragma: no cover - a failing disk
        raise IntegrityError(f"{bak} did not read back as written; {path.name} was not changed.")
    open_sealed(root, base64.b64decode(back["check"]), aad=CHECK_AAD, what="keystore backup check")
    atomic_write(path, raw)
