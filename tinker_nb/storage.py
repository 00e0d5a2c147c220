"""Encrypted artifact store: checkpoints sealed with a fresh DEK each, indexed in SQLite.

File ``<workspace>/artifacts/<tenant>/<artifact_id>.tnc`` (see docs/CHECKPOINT_FORMAT.md)::

    magic "TNCK" (4) ‖ format version (1 byte = 1) ‖ header length (4, big endian) ‖ header (canonical JSON)
    ‖ Cobblestone-256 ciphertext of the payload, context = "tinker-nb/artifact/v1" ‖ header bytes

The header binds tenant, artifact id, name, format version and creation time; because it is the
stream's context, changing any header byte makes decryption fail. The DEK is wrapped by the tenant's
KEK (keystore) with associated data = SHA-256(header); the wrapped DEK lives in the SQLite index so a KEK
rotation rewraps it without touching the file. Payload = a length-prefixed JSON table of blobs followed
by the blob bytes. Writes are atomic (temp file, fsync, rename, fsync dir) and the index row is inserted
only after the file is durable, so a crash never leaves a half-written artifact in the index.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import struct
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, IntegrityError, KeyAccessError, TinkerError
from .security.aead import decrypt_stream, encrypt_stream, new_key
from .security.keys import Keystore, WrappedKey

__all__ = ["ArtifactStore", "ArtifactInfo", "ArtifactNotFoundError", "FORMAT_VERSION", "MAGIC"]

MAGIC = b"TNCK"
FORMAT_VERSION = 1
CONTEXT_PREFIX = b"tinker-nb/artifact/v1"
ALGORITHM = "AES-256-GCM (C2SP Cobblestone-256, chunked, key-committing)"


class ArtifactNotFoundError(TinkerError, KeyError):
    """No artifact with this id exists for this tenant."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else "artifact not found"


@dataclass
class ArtifactInfo:
    artifact_id: str
    name: str
    tenant: str
    created: float
    size: int
    content_sha256: str
    encryption: dict[str, Any]
    format_version: int
    public: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _pack_payload(blobs: dict[str, bytes], metadata: dict) -> list[bytes]:
    table = {"metadata": metadata, "blobs": []}
    offset = 0
    for name, data in blobs.items():
        if not isinstance(name, str) or not isinstance(data, (bytes, bytearray)):
            raise ConfigError("blobs must map names (str) to bytes.")
        table["blobs"].append({"name": name, "offset": offset, "length": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()})
        offset += len(data)
    head = canonical(table)
    return [struct.pack(">I", len(head)), head, *blobs.values()]


def _unpack_payload(payload: bytes) -> tuple[dict[str, bytes], dict]:
    """Split an authenticated payload by its table. The caller has matched SHA-256 of the whole payload,
    which covers the table and every blob byte, so the per-blob digests are not hashed again."""
    try:
        (n,) = struct.unpack(">I", payload[:4])
        table = json.loads(payload[4:4 + n])
        body = memoryview(payload)[4 + n:]
        blobs = {}
        for b in table["blobs"]:
            data = bytes(body[b["offset"]:b["offset"] + b["length"]])
            if len(data) != b["length"]:
                raise IntegrityError(f"blob {b['name']!r} is shorter than its table entry.")
            blobs[b["name"]] = data
        return blobs, table["metadata"]
    except (struct.error, ValueError, KeyError, TypeError):
        raise IntegrityError("artifact payload is malformed.") from None


class ArtifactStore:
    """Per-tenant encrypted store of named artifacts (checkpoints) with an SQLite index."""

    def __init__(self, workspace: str | os.PathLike, keystore: Keystore, *, tenant: str) -> None:
        self.workspace = Path(workspace)
        self.keystore = keystore
        self.tenant = tenant
        self.dir = self.workspace / "artifacts" / tenant
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.workspace / "artifacts.sqlite"
        with self._db() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS artifacts (
                artifact_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL,
                size INTEGER NOT NULL, content_sha256 TEXT NOT NULL, header_sha256 TEXT NOT NULL,
                wrapped_dek TEXT NOT NULL, format_version INTEGER NOT NULL, public TEXT NOT NULL)""")

    def __repr__(self) -> str:
        return f"ArtifactStore(workspace={str(self.workspace)!r}, tenant={self.tenant!r})"

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.index_path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return _Tx(db)

    # ------------------------------------------------------------------ write
    def save(self, name: str, blobs: dict[str, bytes], *, metadata: dict | None = None,
             public: dict | None = None) -> ArtifactInfo:
        """Encrypt ``blobs`` (+ ``metadata``, encrypted too) under a fresh DEK and index it.

        ``public`` is a small dict of non-secret facts (e.g. the step) kept in clear in the index.
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("artifact name must be a non-empty string.")
        try:
            canonical(metadata or {})
            public_json = canonical(public or {}).decode()
        except (TypeError, ValueError):
            raise ConfigError("metadata and public must be JSON-serialisable.") from None
        artifact_id = uuid.uuid4().hex
        created = round(time.time(), 6)
        header = canonical({"artifact_id": artifact_id, "created": created, "format_version": FORMAT_VERSION,
                            "name": name, "tenant": self.tenant})
        header_sha = hashlib.sha256(header).hexdigest()
        dek = new_key()
        wrapped = self.keystore.wrap_dek(self.tenant, dek, aad=header_sha.encode())
        parts = _pack_payload(blobs, metadata or {})
        # The content hash runs in a second thread while the main one encrypts and writes
        # (hashlib releases the GIL on large buffers): a checkpoint save costs ~one pass, not two.
        content = hashlib.sha256()
        hasher = threading.Thread(target=lambda: [content.update(p) for p in parts], daemon=True)
        hasher.start()
        path = self.dir / f"{artifact_id}.tnc"
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".tnc")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + bytes([FORMAT_VERSION]) + struct.pack(">I", len(header)) + header)
                encrypt_stream(dek, parts, f, context=CONTEXT_PREFIX + header)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            hasher.join()
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        hasher.join()
        size = path.stat().st_size
        with self._db() as db:
            db.execute("INSERT INTO artifacts VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (artifact_id, self.tenant, name, created, size, content.hexdigest(), header_sha,
                        json.dumps(wrapped.to_dict()), FORMAT_VERSION, public_json))
        return self._info(artifact_id, name, created, size, content.hexdigest(), wrapped, json.loads(public_json))

    def _info(self, aid, name, created, size, content_sha, wrapped: WrappedKey, public) -> ArtifactInfo:
        return ArtifactInfo(aid, name, self.tenant, created, size, content_sha,
                            {"algorithm": ALGORITHM, "key_id": wrapped.key_id, "key_version": wrapped.version,
                             "dek_wrap": "AES-256-GCM"}, FORMAT_VERSION, public)

    # ------------------------------------------------------------------ read
    def _row(self, artifact_id: str):
        if not isinstance(artifact_id, str) or not artifact_id:
            raise ArtifactNotFoundError("artifact id must be a non-empty string.")
        with self._db() as db:
            row = db.execute("SELECT * FROM artifacts WHERE artifact_id=?", (artifact_id,)).fetchone()
        if row is None:
            raise ArtifactNotFoundError(f"no artifact {artifact_id!r}; list them with list_checkpoints().")
        if row[1] != self.tenant:
            raise KeyAccessError(f"artifact {artifact_id!r} belongs to another tenant.")
        return row

    def load(self, artifact_id: str) -> tuple[dict[str, bytes], dict, ArtifactInfo]:
        """Verify tenant and integrity, then decrypt: returns (blobs, metadata, info)."""
        row = self._row(artifact_id)
        aid, tenant, name, created, size, content_sha, header_sha, wrapped_json, fmt, public = row
        wrapped = WrappedKey.from_dict(json.loads(wrapped_json))
        path = self.dir / f"{aid}.tnc"
        if not path.exists():
            raise IntegrityError(f"artifact file for {aid!r} is missing.")
        with open(path, "rb") as f:
            head = f.read(9)
            if len(head) != 9 or head[:4] != MAGIC or head[4] != FORMAT_VERSION:
                raise IntegrityError(f"artifact {aid!r} has a bad magic or format version.")
            (n,) = struct.unpack(">I", head[5:9])
            if n > 1 << 16:
                raise IntegrityError(f"artifact {aid!r} has an implausible header length.")
            header = f.read(n)
            if hashlib.sha256(header).hexdigest() != header_sha:
                raise IntegrityError(f"artifact {aid!r} header does not match the index.")
            h = json.loads(header)
            if h.get("tenant") != self.tenant or h.get("artifact_id") != aid:
                raise KeyAccessError(f"artifact {aid!r} is bound to another tenant or id.")
            dek = self.keystore.unwrap_dek(self.tenant, wrapped, aad=header_sha.encode())
            payload = decrypt_stream(dek, f, context=CONTEXT_PREFIX + header, what=f"artifact {aid!r}")
        if hashlib.sha256(payload).hexdigest() != content_sha:
            raise IntegrityError(f"artifact {aid!r} content hash does not match the index.")
        blobs, metadata = _unpack_payload(payload)
        return blobs, metadata, self._info(aid, name, created, size, content_sha, wrapped, json.loads(public))

    def list(self) -> list[ArtifactInfo]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM artifacts WHERE tenant=? ORDER BY created", (self.tenant,)).fetchall()
        return [self._info(r[0], r[2], r[3], r[4], r[5], WrappedKey.from_dict(json.loads(r[7])), json.loads(r[9]))
                for r in rows]

    def show(self, artifact_id: str) -> ArtifactInfo:
        r = self._row(artifact_id)
        return self._info(r[0], r[2], r[3], r[4], r[5], WrappedKey.from_dict(json.loads(r[7])), json.loads(r[9]))

    def delete(self, artifact_id: str) -> None:
        """Remove the file and its index row (the DEK goes with the row)."""
        self._row(artifact_id)
        with self._db() as db:
            db.execute("DELETE FROM artifacts WHERE artifact_id=?", (artifact_id,))
        p = self.dir / f"{artifact_id}.tnc"
        if p.exists():
            p.unlink()

    def collect_garbage(self, *, older_than_s: float = 3600.0) -> int:
        """Remove temp files left by interrupted saves (never indexed, never loadable). Returns the count."""
        n = 0
        for f in self.dir.glob(".tmp-*"):
            if time.time() - f.stat().st_mtime >= older_than_s:
                f.unlink(missing_ok=True)
                n += 1
        return n

    def rotate(self) -> dict:
        """New primary KEK for the tenant and rewrap every DEK under it (files are not re-encrypted)."""
        version = self.keystore.rotate(self.tenant)
        n = 0
        with self._db() as db:
            rows = db.execute("SELECT artifact_id, header_sha256, wrapped_dek FROM artifacts WHERE tenant=?",
                              (self.tenant,)).fetchall()
            for aid, hsha, wj in rows:
                new = self.keystore.rewrap(self.tenant, WrappedKey.from_dict(json.loads(wj)), aad=hsha.encode())
                db.execute("UPDATE artifacts SET wrapped_dek=? WHERE artifact_id=?", (json.dumps(new.to_dict()), aid))
                n += 1
        return {"tenant": self.tenant, "primary_version": version, "rewrapped": n}

    def retire(self, version: int) -> None:
        """Destroy an old KEK version, refused while any indexed artifact's DEK is still wrapped under it."""
        with self._db() as db:
            rows = db.execute("SELECT wrapped_dek FROM artifacts WHERE tenant=?", (self.tenant,)).fetchall()
        still = sum(1 for (wj,) in rows if WrappedKey.from_dict(json.loads(wj)).version == int(version))
        if still:
            raise ConfigError(f"{still} checkpoint(s) of tenant {self.tenant!r} are still wrapped under key version "
                              f"{version}; rotate (which rewraps them) before retiring it.")
        self.keystore.retire(self.tenant, version)


class _Tx:
    """Context manager: BEGIN IMMEDIATE … COMMIT (or ROLLBACK), then close."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, et, ev, tb) -> None:
        try:
            self.db.execute("ROLLBACK" if et else "COMMIT")
        finally:
            self.db.close()


_ = io
