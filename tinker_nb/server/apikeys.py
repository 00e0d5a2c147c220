"""API keys for ``tinker-nb serve``: random ``tml-`` keys, stored only as a keyed hash (SQLite in the workspace).

A key is ``tml-`` followed by 32 random bytes (256 bits, base64url). The server keeps
``HMAC-SHA256(K, key)`` where ``K = Keystore.derive_subkey("tinker-nb/api-keys/v1")`` comes from the
workspace root key: a copy of ``apikeys.sqlite`` alone neither reveals a key nor lets anyone test
guesses offline. Lookup is by the HMAC (an index), so checking a key costs one hash and one query.
Why a keyed hash and not Argon2id: see docs/SECURITY.md ("API keys").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from ..remote.wire import API_KEY_PREFIX, NotFoundError

__all__ = ["APIKEYS_FILE", "SUBKEY_LABEL", "ApiKeyInfo", "ApiKeyStore"]

APIKEYS_FILE = "apikeys.sqlite"
SUBKEY_LABEL = "tinker-nb/api-keys/v1"
_MAX_KEY_LEN = 200


def _valid_tenant(tenant: object) -> str:
    if (not isinstance(tenant, str) or not tenant or len(tenant) > 64
            or not tenant.replace("-", "").replace("_", "").isalnum() or not tenant.isascii()):
        raise ConfigError(f"tenant must be 1-64 ASCII letters, digits, '-' or '_', got {tenant!r}.")
    return tenant


@dataclass
class ApiKeyInfo:
    key_id: str
    tenant: str
    created: float
    revoked: float | None
    label: str

    def to_dict(self) -> dict:
        return asdict(self)


class ApiKeyStore:
    """The workspace's API keys (``<workspace>/apikeys.sqlite``); ``secret`` is the 32-byte HMAC key."""

    def __init__(self, workspace: str | Path, secret: bytes) -> None:
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < 32:
            raise ConfigError("the API key store needs a 32-byte secret derived from the workspace root key.")
        self.path = Path(workspace) / APIKEYS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._secret = bytes(secret)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._db.execute("""CREATE TABLE IF NOT EXISTS api_keys (
            key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, key_hmac TEXT NOT NULL UNIQUE,
            created REAL NOT NULL, revoked REAL, label TEXT NOT NULL DEFAULT '')""")
        try:
            self.path.chmod(0o600)
        except OSError:  # pragma: no cover
            pass

    @classmethod
    def for_keystore(cls, workspace: str | Path, keystore) -> ApiKeyStore:
        return cls(workspace, keystore.derive_subkey(SUBKEY_LABEL))

    def __repr__(self) -> str:  # never the secret
        return f"ApiKeyStore(path={str(self.path)!r})"

    @property
    def _db(self) -> sqlite3.Connection:
        """One connection, opened on first use (and again after close())."""
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _mac(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ lifecycle
    def create(self, tenant: str, *, label: str = "") -> tuple[str, ApiKeyInfo]:
        """A new key for ``tenant``: returns ``(api_key, info)``. The key itself is never stored."""
        _valid_tenant(tenant)
        if not isinstance(label, str) or len(label) > 200:
            raise ConfigError("label must be a string of at most 200 characters.")
        key = API_KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        key_id = secrets.token_hex(8)
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO api_keys VALUES (?,?,?,?,NULL,?)",
                             (key_id, tenant, self._mac(key), now, label))
        return key, ApiKeyInfo(key_id, tenant, now, None, label)

    def list(self, *, tenant: str | None = None) -> list[ApiKeyInfo]:
        q = "SELECT key_id, tenant, created, revoked, label FROM api_keys"
        args: tuple = ()
        if tenant is not None:
            q += " WHERE tenant=?"
            args = (tenant,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY created", args).fetchall()
        return [ApiKeyInfo(*r) for r in rows]

    def revoke(self, key_id: str) -> ApiKeyInfo:
        if not isinstance(key_id, str) or not key_id:
            raise ConfigError("give the key_id shown by `tinker-nb apikey list`.")
        with self._lock:
            row = self._db.execute("SELECT key_id, tenant, created, revoked, label FROM api_keys WHERE key_id=?",
                                   (key_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r}; see `tinker-nb apikey list`.")
            if row[3] is None:
                now = time.time()
                self._db.execute("UPDATE api_keys SET revoked=? WHERE key_id=?", (now, key_id))
                row = (*row[:3], now, row[4])
        return ApiKeyInfo(*row)

    # ------------------------------------------------------------------ authentication
    def authenticate(self, key: str | None) -> ApiKeyInfo | None:
        """The key's record if ``key`` is a live key of this workspace, else None (revoked keys: None)."""
        if not isinstance(key, str) or not key.startswith(API_KEY_PREFIX) or len(key) > _MAX_KEY_LEN:
            return None
        mac = self._mac(key)
        with self._lock:
            row = self._db.execute("SELECT key_id, tenant, created, revoked, label, key_hmac FROM api_keys "
                                   "WHERE key_hmac=?", (mac,)).fetchone()
        if row is None or not hmac.compare_digest(row[5], mac) or row[3] is not None:
            return None
        return ApiKeyInfo(*row[:5])
