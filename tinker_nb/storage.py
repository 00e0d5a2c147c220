"""Encrypted artifact store: checkpoints sealed with a fresh DEK each, indexed in SQLite.

File ``<workspace>/artifacts/<tenant>/<artifact_id>.tnc`` (see docs/CHECKPOINT_FORMAT.md)::

    magic "TNCK" (4) ‖ format version (1 byte = 2) ‖ header length (4, big endian) ‖ header (canonical JSON)
    ‖ Cobblestone-256 ciphertext of the payload, context = "tinker-nb/artifact/v1" ‖ header bytes

The header (format 2) binds tenant, artifact id, name, creation time, format version and the public
facts (``public``, e.g. the step). It is the stream's context, so changing any header byte makes
decryption fail. The DEK is wrapped by the tenant's KEK (keystore) with associated data
``SHA-256(header) ‖ "|" ‖ SHA-256(payload) ‖ "|" ‖ file size`` and the wrapped DEK lives in the SQLite
index; every read AND every listing re-reads the header, unwraps the DEK (which authenticates the
header digest, content digest and size under the tenant's KEK) and compares each index column with
the authenticated values, so an edited index row is refused (IntegrityError), never shown.

Saving is one recoverable sequence (``save(..., ledger=...)``)::

    ledger "save_begin" → temp file, fsync → rename, fsync dir → [keystore lock: wrap DEK, index row]
    → ledger "save_state" (the ledger signs a checkpoint after it)

and :meth:`ArtifactStore.collect_garbage` reconciles what a crash at any point leaves behind (see its
docstring). Format 1 files (header without ``public``; DEK bound to the header digest only) still load.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from .canonical import canonical_json as canonical
from .errors import ConfigError, IntegrityError, KeyAccessError, TinkerError
from .fsio import atomic_file, fsync_dir, immediate_tx, sqlite_connect
from .security.aead import decrypt_stream, encrypt_stream, new_key
from .security.keys import Keystore, WrappedKey

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "SAVE_ABORTED",
    "SAVE_BEGIN",
    "SAVE_COMMIT",
    "ArtifactInfo",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "GarbageReport",
]

MAGIC = b"TNCK"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CONTEXT_PREFIX = b"tinker-nb/artifact/v1"
ALGORITHM = "AES-256-GCM (C2SP Cobblestone-256, chunked, key-committing)"
MAX_HEADER = 1 << 16
TEMP_PREFIX = ".tmp-"
# Ledger operations of the save sequence (params of each: {"artifact_id", "name"}, digested).
SAVE_BEGIN, SAVE_COMMIT, SAVE_ABORTED = "save_begin", "save_state", "save_aborted"


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


@dataclass
class GarbageReport:
    """What :meth:`ArtifactStore.collect_garbage` did. ``changed`` is False when nothing needed fixing."""

    temp_files_removed: list[str] = field(default_factory=list)
    orphan_files_removed: list[str] = field(default_factory=list)  # .tnc files no index row points to
    saves_aborted: list[str] = field(default_factory=list)  # save_begin without a checkpoint: save_aborted logged
    saves_recovered: list[str] = field(default_factory=list)  # indexed without save_state: save_state logged
    missing_files: list[str] = field(default_factory=list)  # indexed, file gone (reported, left as is)
    unaudited: list[str] = field(default_factory=list)  # indexed without any save entry (saved without a ledger)
    in_progress: list[str] = field(default_factory=list)  # younger than older_than_s: left alone
    checkpoint_signed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.temp_files_removed or self.orphan_files_removed or self.saves_aborted
                    or self.saves_recovered or self.checkpoint_signed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


def _crash_point(name: str) -> None:
    """No-op marker between the steps of a save; the crash-safety tests SIGKILL the process here."""


def _pack_payload(blobs: dict[str, bytes], metadata: dict[str, Any]) -> list[bytes]:
    if not isinstance(blobs, dict):
        raise ConfigError("blobs must be a dict mapping names (str) to bytes.")
    table: dict[str, Any] = {"metadata": metadata, "blobs": []}
    offset = 0
    for name, data in blobs.items():
        if not isinstance(name, str) or not isinstance(data, (bytes, bytearray)):
            raise ConfigError("blobs must map names (str) to bytes.")
        table["blobs"].append({"name": name, "offset": offset, "length": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()})
        offset += len(data)
    head = canonical(table)
    return [struct.pack(">I", len(head)), head, *blobs.values()]


def _unpack_payload(payload: bytes) -> tuple[dict[str, bytes], dict[str, Any]]:
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


def _dek_aad(fmt: int, header_sha: str, content_sha: str, size: int) -> bytes:
    """What a wrapped DEK is bound to: format 2 binds header digest, content digest and file size."""
    if fmt == 1:
        return header_sha.encode()
    return f"{header_sha}|{content_sha}|{size}".encode()


_COLUMNS = ("artifact_id, tenant, name, created, size, content_sha256, header_sha256, wrapped_dek, format_version, "
            "public")


@dataclass
class _Row:
    artifact_id: str
    tenant: str
    name: str
    created: float
    size: int
    content_sha256: str
    header_sha256: str
    wrapped_dek: str
    format_version: int
    public: str


class ArtifactStore:
    """Per-tenant encrypted store of named artifacts (checkpoints) with an SQLite index."""

    def __init__(self, workspace: str | os.PathLike[str], keystore: Keystore, *, tenant: str) -> None:
        self.workspace = Path(workspace)
        self.keystore = keystore
        self.tenant = tenant
        self.dir = self.workspace / "artifacts" / tenant
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.workspace / "artifacts.sqlite"
        with self._tx() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS artifacts (
                artifact_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL,
                size INTEGER NOT NULL, content_sha256 TEXT NOT NULL, header_sha256 TEXT NOT NULL,
                wrapped_dek TEXT NOT NULL, format_version INTEGER NOT NULL, public TEXT NOT NULL)""")

    def __repr__(self) -> str:
        return f"ArtifactStore(workspace={str(self.workspace)!r}, tenant={self.tenant!r})"

    def _tx(self) -> _Tx:
        return _Tx(sqlite_connect(self.index_path))

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = sqlite_connect(self.index_path)
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise IntegrityError(f"the artifact index {self.index_path.name} is unreadable ({exc}).") from None
        finally:
            db.close()

    # ------------------------------------------------------------------ write
    def save(self, name: str, blobs: dict[str, bytes], *, metadata: dict[str, Any] | None = None,
             public: dict[str, Any] | None = None, ledger: Any = None,
             audit_summary: dict[str, Any] | None = None) -> ArtifactInfo:
        """Encrypt ``blobs`` (+ ``metadata``, encrypted too) under a fresh DEK and index it.

        ``public`` is a small dict of non-secret facts (e.g. the step), kept in clear in the index and
        bound into the authenticated header. With ``ledger`` (an AuditLedger of this tenant) the save is
        the recoverable sequence of the module docstring: ``save_begin`` and ``save_state`` entries with
        params ``{"artifact_id", "name"}``; ``audit_summary`` (non-secret scalars) goes into both entries'
        summaries, with ``artifact_id`` and ``content_sha256`` added to the ``save_state`` entry.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ConfigError("artifact name must be a non-empty string of at most 200 characters.")
        if ((metadata is not None and not isinstance(metadata, dict))
                or (public is not None and not isinstance(public, dict))):
            raise ConfigError("metadata and public must be dicts of JSON values.")
        try:
            canonical(metadata or {})
            public_json = canonical(public or {}).decode()
        except (TypeError, ValueError):
            raise ConfigError("metadata and public must be JSON-serialisable.") from None
        if len(public_json) > 4096:
            raise ConfigError("public must be small (at most 4096 bytes of JSON); put the rest in metadata.")
        if ledger is not None and getattr(ledger, "tenant", self.tenant) != self.tenant:
            raise ConfigError(f"the ledger belongs to tenant {ledger.tenant!r}, not {self.tenant!r}.")
        summary = dict(audit_summary or {})
        if ledger is not None:
            from .ledger.log import clean_summary

            summary = clean_summary(summary)
        parts = _pack_payload(blobs, metadata or {})
        self.keystore.key_info(self.tenant)  # refuse a missing, shredded or locked tenant before anything is written
        artifact_id = uuid.uuid4().hex
        created = round(time.time(), 6)
        header = canonical({"artifact_id": artifact_id, "created": created, "format_version": FORMAT_VERSION,
                            "name": name, "public": json.loads(public_json), "tenant": self.tenant})
        header_sha = hashlib.sha256(header).hexdigest()
        params = {"artifact_id": artifact_id, "name": name}
        if ledger is not None:
            ledger.append(SAVE_BEGIN, params, summary={**summary, "artifact_id": artifact_id})
        _crash_point("begin_logged")
        path = self.dir / f"{artifact_id}.tnc"
        try:
            dek = new_key()
            # The content hash runs in a second thread while the main one encrypts and writes
            # (hashlib releases the GIL on large buffers): a checkpoint save costs ~one pass, not two.
            content = hashlib.sha256()

            def hash_parts() -> None:
                for p in parts:
                    content.update(p)

            hasher = threading.Thread(target=hash_parts, daemon=True)
            hasher.start()
            try:
                with atomic_file(path, mode=0o600, temp_prefix=TEMP_PREFIX, temp_suffix=".tnc") as f:
                    f.write(MAGIC + bytes([FORMAT_VERSION]) + struct.pack(">I", len(header)) + header)
                    encrypt_stream(dek, parts, f, context=CONTEXT_PREFIX + header)
                    _crash_point("file_written")
            finally:
                hasher.join()
            _crash_point("file_renamed")
            size = path.stat().st_size
            content_sha = content.hexdigest()
            # Wrap and index under the keystore's shared lock: a concurrent retire() either ran before
            # (then this wraps under the new primary) or sees this row and refuses.
            with self.keystore.locked():
                wrapped = self.keystore.wrap_dek(self.tenant, dek, aad=_dek_aad(FORMAT_VERSION, header_sha,
                                                                                content_sha, size))
                with self._tx() as db:
                    db.execute(f"INSERT INTO artifacts ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                               (artifact_id, self.tenant, name, created, size, content_sha, header_sha,
                                json.dumps(wrapped.to_dict()), FORMAT_VERSION, public_json))
        except BaseException as exc:
            path.unlink(missing_ok=True)  # never indexed: its DEK is gone, so it could never be loaded
            if ledger is not None:
                try:
                    ledger.append(SAVE_ABORTED, params, summary={"artifact_id": artifact_id,
                                                                 "reason": f"save failed: {type(exc).__name__}"})
                except Exception:  # noqa: BLE001 - collect_garbage records it later
                    pass
            raise
        _crash_point("indexed")
        if ledger is not None:
            ledger.append(SAVE_COMMIT, params, summary={**summary, "artifact_id": artifact_id,
                                                        "content_sha256": content_sha})
            _crash_point("committed")
        return self._info(_Row(artifact_id, self.tenant, name, created, size, content_sha, header_sha,
                               json.dumps(wrapped.to_dict()), FORMAT_VERSION, public_json), wrapped)

    def _info(self, r: _Row, wrapped: WrappedKey | None, *, raw: bool = False) -> ArtifactInfo:
        try:
            public = json.loads(r.public)
        except (TypeError, ValueError):
            if not raw:
                raise
            public = {"unparsed": str(r.public)[:200]}
        enc = {"algorithm": ALGORITHM, "dek_wrap": "AES-256-GCM", "key_id": wrapped.key_id if wrapped else None,
               "key_version": wrapped.version if wrapped else None}
        if raw:
            enc["verified"] = False
        return ArtifactInfo(r.artifact_id, r.name, self.tenant, r.created, r.size, r.content_sha256, enc,
                            r.format_version, public)

    # ------------------------------------------------------------------ read
    def _row(self, artifact_id: str) -> _Row:
        if not isinstance(artifact_id, str) or not artifact_id:
            raise ArtifactNotFoundError("artifact id must be a non-empty string.")
        rows = self._query(f"SELECT {_COLUMNS} FROM artifacts WHERE artifact_id=?", (artifact_id,))
        if not rows:
            raise ArtifactNotFoundError(f"no artifact {artifact_id!r} in tenant {self.tenant!r}; list the saved "
                                        "checkpoints with list_checkpoints() (CLI: `tinker-nb checkpoints`).")
        row = _Row(*rows[0])
        if row.tenant != self.tenant:
            raise KeyAccessError(f"artifact {artifact_id!r} belongs to another tenant.")
        return row

    def _authenticate(self, r: _Row, f: BinaryIO) -> tuple[bytes, bytes, WrappedKey]:
        """Read the header from ``f``, unwrap the DEK (authenticating header, content digest and size under
        the tenant KEK) and compare every index column with the authenticated values: (header, dek, wrapped)."""
        aid = r.artifact_id
        head = f.read(9)
        if len(head) != 9 or head[:4] != MAGIC or head[4] not in READABLE_VERSIONS:
            raise IntegrityError(f"artifact {aid!r} has a bad magic or format version.")
        fmt = head[4]
        (n,) = struct.unpack(">I", head[5:9])
        if n > MAX_HEADER:
            raise IntegrityError(f"artifact {aid!r} has an implausible header length.")
        header = f.read(n)
        if hashlib.sha256(header).hexdigest() != r.header_sha256:
            raise IntegrityError(f"artifact {aid!r}: the file's header does not match the index.")
        if fmt != r.format_version:
            raise IntegrityError(f"artifact {aid!r}: the index's format version does not match the file.")
        wrapped = WrappedKey.from_dict(_loads(r.wrapped_dek, aid))
        dek = self.keystore.unwrap_dek(self.tenant, wrapped, aad=_dek_aad(fmt, r.header_sha256, r.content_sha256,
                                                                          r.size))
        # From here the header bytes, content digest and size are authenticated (format 2).
        try:
            h = json.loads(header)
        except ValueError:
            raise IntegrityError(f"artifact {aid!r} has a malformed header.") from None
        if not isinstance(h, dict) or h.get("tenant") != self.tenant or h.get("artifact_id") != aid:
            raise KeyAccessError(f"artifact {aid!r} is bound to another tenant or id.")
        want = {"name": r.name, "created": r.created, "format_version": r.format_version}
        if fmt >= 2:
            want["public"] = _loads(r.public, aid)
            size = os.fstat(f.fileno()).st_size
            if size != r.size:
                raise IntegrityError(f"artifact {aid!r}: file size {size} differs from the authenticated size "
                                     f"{r.size}.")
        for k, v in want.items():
            if h.get(k) != v or type(h.get(k)) is not type(v):
                raise IntegrityError(f"artifact {aid!r}: index field {k!r} does not match the authenticated header "
                                     "(the index was edited).")
        return header, dek, wrapped

    def load(self, artifact_id: str) -> tuple[dict[str, bytes], dict[str, Any], ArtifactInfo]:
        """Verify tenant and integrity, then decrypt: returns (blobs, metadata, info)."""
        r = self._row(artifact_id)
        path = self.dir / f"{r.artifact_id}.tnc"
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise IntegrityError(f"artifact file for {r.artifact_id!r} is missing.") from None
        with f:
            header, dek, wrapped = self._authenticate(r, f)
            payload = decrypt_stream(dek, f, context=CONTEXT_PREFIX + header, what=f"artifact {r.artifact_id!r}")
        if hashlib.sha256(payload).hexdigest() != r.content_sha256:
            raise IntegrityError(f"artifact {r.artifact_id!r} content hash does not match the index.")
        blobs, metadata = _unpack_payload(payload)
        return blobs, metadata, self._info(r, wrapped)

    def _verified_info(self, r: _Row) -> ArtifactInfo:
        try:
            f = open(self.dir / f"{r.artifact_id}.tnc", "rb")
        except FileNotFoundError:
            raise IntegrityError(f"artifact file for {r.artifact_id!r} is missing.") from None
        with f:
            _, _, wrapped = self._authenticate(r, f)
        return self._info(r, wrapped)

    def list(self, *, verify: bool = True) -> list[ArtifactInfo]:
        """This tenant's artifacts, oldest first. Each row is authenticated against its file (IntegrityError
        naming the artifact if one was edited); ``verify=False`` skips that and returns the raw index."""
        rows = [_Row(*r) for r in self._query(f"SELECT {_COLUMNS} FROM artifacts WHERE tenant=? ORDER BY created",
                                              (self.tenant,))]
        if not verify:
            out = []
            for r in rows:
                try:
                    wrapped = WrappedKey.from_dict(json.loads(r.wrapped_dek))
                except (TypeError, ValueError, IntegrityError):
                    wrapped = None
                out.append(self._info(r, wrapped, raw=True))
            return out
        return [self._verified_info(r) for r in rows]

    def show(self, artifact_id: str) -> ArtifactInfo:
        return self._verified_info(self._row(artifact_id))

    def delete(self, artifact_id: str) -> None:
        """Remove the index row (the DEK goes with it), then the file."""
        self._row(artifact_id)
        with self._tx() as db:
            db.execute("DELETE FROM artifacts WHERE artifact_id=?", (artifact_id,))
        (self.dir / f"{artifact_id}.tnc").unlink(missing_ok=True)
        fsync_dir(self.dir)

    # ------------------------------------------------------------------ recovery
    def collect_garbage(self, *, older_than_s: float = 3600.0, ledger: Any = None) -> GarbageReport:
        """Reconcile files, index and ledger after crashes; returns what was done.

        Only leftovers older than ``older_than_s`` are touched (a save in progress in another process is
        left alone and listed in ``in_progress``):

        - temp files of interrupted writes are removed;
        - ``.tnc`` files with no index row (a crash between rename and index) are removed: their DEK was
          never stored, so they could never be decrypted;
        - with ``ledger``: an indexed checkpoint with a ``save_begin`` but no ``save_state`` entry (crash
          between index and ledger commit) gets its ``save_state`` entry (summary ``recovered: true``); a
          ``save_begin`` with neither a checkpoint nor a ``save_state`` gets a ``save_aborted`` entry; a
          signed ledger checkpoint follows if anything was appended or the head is not yet signed.
          Indexed artifacts with no save entry at all (saved without ``ledger=``, e.g. server data sets)
          are listed in ``unaudited`` and left alone.
        Indexed checkpoints whose file is gone are reported in ``missing_files``, never silently dropped.
        """
        if not isinstance(older_than_s, (int, float)) or older_than_s < 0:
            raise ConfigError("older_than_s must be a number of seconds ≥ 0.")
        rep = GarbageReport()
        now = time.time()

        def old(t: float) -> bool:
            return now - t >= older_than_s

        for f in sorted(self.dir.glob(TEMP_PREFIX + "*")):
            if old(f.stat().st_mtime):
                f.unlink(missing_ok=True)
                rep.temp_files_removed.append(f.name)
        rows = {r[0]: _Row(*r) for r in self._query(f"SELECT {_COLUMNS} FROM artifacts WHERE tenant=?",
                                                    (self.tenant,))}
        for f in sorted(self.dir.glob("*.tnc")):
            if f.name.startswith(".") or f.stem in rows:
                continue
            if old(f.stat().st_mtime):
                f.unlink(missing_ok=True)
                rep.orphan_files_removed.append(f.stem)
            else:
                rep.in_progress.append(f.stem)
        if rep.temp_files_removed or rep.orphan_files_removed:
            fsync_dir(self.dir)
        rep.missing_files = sorted(a for a in rows if not (self.dir / f"{a}.tnc").exists())
        if ledger is None:
            return rep
        if getattr(ledger, "tenant", self.tenant) != self.tenant:
            raise ConfigError(f"the ledger belongs to tenant {ledger.tenant!r}, not {self.tenant!r}.")
        begun: dict[str, Any] = {}
        done: set[str] = set()
        for e in ledger.entries():
            aid = (e.summary or {}).get("artifact_id")
            if not isinstance(aid, str):
                continue
            if e.operation == SAVE_BEGIN:
                begun[aid] = e
            elif e.operation in (SAVE_COMMIT, SAVE_ABORTED):
                done.add(aid)
        appended = False
        for aid, r in sorted(rows.items(), key=lambda kv: kv[1].created):
            if aid in done:
                continue
            if aid not in begun:
                rep.unaudited.append(aid)
                continue
            if not old(r.created):
                rep.in_progress.append(aid)
                continue
            summ = dict(begun[aid].summary)
            ledger.append(SAVE_COMMIT, {"artifact_id": aid, "name": r.name},
                          summary={**summ, "artifact_id": aid, "content_sha256": r.content_sha256, "recovered": True})
            rep.saves_recovered.append(aid)
            appended = True
        for aid, e in begun.items():
            if aid in done or aid in rows:
                continue
            ts = datetime.fromisoformat(e.ts).timestamp()
            if (self.dir / f"{aid}.tnc").exists() or not old(ts):
                if aid not in rep.in_progress:
                    rep.in_progress.append(aid)
                continue
            ledger.append(SAVE_ABORTED, {"artifact_id": aid, "name": "?"},
                          summary={"artifact_id": aid, "reason": "interrupted before the checkpoint was indexed"})
            rep.saves_aborted.append(aid)
            appended = True
        if getattr(ledger, "signer", None) is not None:
            cps = ledger.checkpoints()
            if appended or not cps or cps[-1].size != ledger.size():
                ledger.checkpoint()
                rep.checkpoint_signed = True
        return rep

    # ------------------------------------------------------------------ keys
    def rotate(self) -> dict[str, Any]:
        """New primary KEK for the tenant and rewrap every DEK under it (files are not re-encrypted)."""
        version = self.keystore.rotate(self.tenant)
        n = 0
        with self._tx() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM artifacts WHERE tenant=?", (self.tenant,)).fetchall()
            for r in map(lambda t: _Row(*t), rows):
                aad = _dek_aad(r.format_version, r.header_sha256, r.content_sha256, r.size)
                new = self.keystore.rewrap(self.tenant, WrappedKey.from_dict(_loads(r.wrapped_dek, r.artifact_id)),
                                           aad=aad)
                db.execute("UPDATE artifacts SET wrapped_dek=? WHERE artifact_id=?",
                           (json.dumps(new.to_dict()), r.artifact_id))
                n += 1
        return {"tenant": self.tenant, "primary_version": version, "rewrapped": n}

    def _wrapped_under(self, version: int) -> int:
        rows = self._query("SELECT artifact_id, wrapped_dek FROM artifacts WHERE tenant=?", (self.tenant,))
        return sum(1 for aid, wj in rows if WrappedKey.from_dict(_loads(wj, aid)).version == version)

    def retire(self, version: int) -> None:
        """Destroy an old KEK version, refused while any indexed artifact's DEK is still wrapped under it.

        The check runs under the keystore's exclusive lock, and saves wrap and index under its shared
        lock, so a save running meanwhile can never end up wrapped under the retired version.
        """
        self.keystore.retire(self.tenant, version, in_use=self._wrapped_under)


def _loads(text: str, aid: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise IntegrityError(f"artifact {aid!r}: an index field is not valid JSON (the index was edited).") from None


class _Tx:
    """Context manager: BEGIN IMMEDIATE … COMMIT (or ROLLBACK), then close the connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._cm = immediate_tx(db)

    def __enter__(self) -> sqlite3.Connection:
        try:
            return self._cm.__enter__()
        except BaseException:
            self.db.close()
            raise

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> bool:
        try:
            return bool(self._cm.__exit__(et, ev, tb))
        finally:
            self.db.close()
