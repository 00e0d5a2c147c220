"""The audit ledger: an append-only SQLite log that is both a hash chain and an RFC 9162 Merkle tree.

Entry (canonical JSON, hashed)::

    {"seq", "ts", "tenant", "operation", "params_digest", "summary", "prev_hash"}
    record_hash = SHA-256(canonical_json(entry))       prev_hash of entry 0 = "GENESIS"
    Merkle leaf = record_hash (32 raw bytes)           leaf hash = SHA-256(0x00 ‖ record_hash)

``params_digest`` is SHA-256 of the canonical JSON of the operation's parameters: the raw parameters
are never stored. ``summary`` holds only small non-secret scalars chosen by the caller.
Signed checkpoints sign ``"tinker-nb/ledger-checkpoint/v1\\n" ‖ tenant ‖ "\\n" ‖ size ‖ "\\n" ‖ root hex ‖ "\\n" ‖ ts``
with the workspace's composite signer (see docs/AUDIT_LEDGER.md). A ledger with a signer signs a
checkpoint right after every operation in :data:`SIGNED_AFTER` (saves, releases, key changes), so
deleting such an entry from the tail is detected by the checkpoint that follows it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..canonical import canonical_json
from ..errors import ConfigError, IntegrityError, SignatureError
from ..fsio import immediate_tx, sqlite_connect
from . import merkle

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CHECKPOINT_CONTEXT",
    "GENESIS",
    "SIGNED_AFTER",
    "AuditLedger",
    "Entry",
    "SignedCheckpoint",
    "VerifyReport",
    "checkpoint_message",
    "clean_summary",
    "privacy_floors",
]

# Operations after which a ledger that has a signer signs a checkpoint in the same call.
SIGNED_AFTER = frozenset({"save_state", "save_aborted", "package", "rotate_keys", "retire_key", "shred_tenant",
                          "create_tenant"})

GENESIS = "GENESIS"
CHECKPOINT_CONTEXT = b"tinker-nb/ledger-checkpoint/v1"
_SUMMARY_TYPES = (str, int, float, bool, type(None))


@dataclass
class Entry:
    seq: int
    ts: str
    tenant: str
    operation: str
    params_digest: str
    summary: dict[str, Any]
    prev_hash: str
    record_hash: str

    def body(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("record_hash")
        return d


@dataclass
class SignedCheckpoint:
    size: int
    root_hash: str
    timestamp: str
    tenant: str
    key_id: str
    signature: str  # base64 composite signature
    public_key: str  # base64, for display; verification trusts only a pinned key

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> SignedCheckpoint:
        """Parse an exported checkpoint (``to_dict()`` form); IntegrityError naming what is malformed."""
        fields = ("size", "root_hash", "timestamp", "tenant", "key_id", "signature", "public_key")
        if not isinstance(d, dict) or set(d) != set(fields):
            raise IntegrityError(f"a signed ledger checkpoint has exactly the fields {', '.join(fields)}.")
        if not isinstance(d["size"], int) or isinstance(d["size"], bool) or d["size"] < 0:
            raise IntegrityError("checkpoint size must be a non-negative integer.")
        if not all(isinstance(d[k], str) for k in fields[1:]) or len(d["root_hash"]) != 64:
            raise IntegrityError("checkpoint root_hash (64 hex), timestamp, tenant, key_id, signature and public_key "
                                 "must be strings.")
        try:
            bytes.fromhex(d["root_hash"])
            base64.b64decode(d["signature"], validate=True)
        except (ValueError, binascii.Error):
            raise IntegrityError("checkpoint root_hash is not hex or signature is not base64.") from None
        return cls(**d)


def load_checkpoint_file(path: str | Path) -> SignedCheckpoint:
    """Read a checkpoint exported with ``tinker-nb audit checkpoint --out FILE`` (or ``to_dict()`` as JSON)."""
    p = Path(path)
    try:
        return SignedCheckpoint.from_dict(json.loads(p.read_bytes()))
    except FileNotFoundError:
        raise ConfigError(f"trusted checkpoint file {p} does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"trusted checkpoint {p} is a folder; give the JSON file.") from None
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"trusted checkpoint file {p} is not valid JSON.") from None


@dataclass
class VerifyReport:
    ok: bool
    entries_checked: int
    checkpoints_checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    root_hash: str | None = None
    checked_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_message(tenant: str, size: int, root_hex: str, ts: str) -> bytes:
    return f"tinker-nb/ledger-checkpoint/v1\n{tenant}\n{size}\n{root_hex}\n{ts}\n".encode()


def record_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()


def clean_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A ledger entry's summary as stored: string keys, small scalar values (NaN becomes None); else ConfigError."""
    out = {}
    for k, v in (summary or {}).items():
        if not isinstance(k, str):
            raise ConfigError("ledger summary keys must be strings.")
        if isinstance(v, float) and v != v:
            v = None
        if not isinstance(v, _SUMMARY_TYPES):
            raise ConfigError(f"ledger summary value for {k!r} must be a scalar (str/int/float/bool/None).")
        if isinstance(v, str) and len(v) > 200:
            raise ConfigError(f"ledger summary value for {k!r} is too long (max 200 characters).")
        out[k] = v
    return out


def privacy_floors(path: str | Path) -> dict[tuple[str, str], int]:
    """What the ledger at ``path`` proves the privacy odometer holds: ``{(tenant, pool): charges}``.

    Every ``attach_dataset`` and ``optim_step`` entry names the pool it used (``pool``) and how many charges
    the odometer held for it right after (``pool_charges``); charges only grow, so the largest count an entry
    states for a pool is a lower bound on what the odometer must hold. An attachment proves the pool was
    looked up (the odometer file existed: 0 charges), and one that reported a positive ``dataset_epsilon``
    proves at least one charge (entries written before ``pool_charges`` existed). No file or no entries: {}.
    Read-only; no key is needed (summaries are in clear). An unreadable ledger: IntegrityError.
    """
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        db = sqlite_connect(p, readonly=True)
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"the audit ledger {p.name} is unreadable ({exc}).") from None
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='entries'").fetchone() is None:
            return {}
        rows = db.execute(
            "SELECT tenant, json_extract(summary, '$.pool') AS pool, max(max("
            "  CASE WHEN typeof(json_extract(summary, '$.pool_charges')) = 'integer' "
            "       THEN json_extract(summary, '$.pool_charges') ELSE 0 END, "
            "  CASE WHEN operation = 'attach_dataset' AND json_extract(summary, '$.dataset_epsilon') > 0 "
            "       THEN 1 ELSE 0 END)) "
            "FROM entries WHERE operation IN ('attach_dataset', 'optim_step') "
            "AND typeof(json_extract(summary, '$.pool')) = 'text' GROUP BY tenant, pool").fetchall()
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"the audit ledger {p.name} is unreadable ({exc}).") from None
    finally:
        db.close()
    return {(str(t), str(pool)): int(n) for t, pool, n in rows}


class AuditLedger:
    """Append-only audit log for one tenant in one SQLite file (several tenants may share the file).

    ``readonly=True`` (what ``tinker-nb audit verify`` uses) opens an existing file with SQLite's
    ``mode=ro``: nothing is created or written, and a file without the ledger's tables is refused with
    IntegrityError instead of being turned into an empty ledger.
    """

    def __init__(self, path: str | Path, *, tenant: str, signer: Any = None, readonly: bool = False) -> None:
        self.path = Path(path)
        self.tenant = tenant
        self.signer = signer
        self.readonly = readonly
        self.last_verification: VerifyReport | None = None
        self._db_lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._frontier = merkle.Frontier()  # the tree of the entries signed so far, extended by checkpoint()
        self._frontier_head = GENESIS  # record hash of the last entry pushed into _frontier
        if readonly:
            if not self.path.is_file():
                raise ConfigError(f"no audit ledger file at {self.path}.")
            try:
                with self._connect() as db:
                    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            except sqlite3.DatabaseError as exc:
                self.close()
                raise IntegrityError(f"{self.path} is not a readable SQLite database ({exc}).") from None
            if not {"entries", "checkpoints"} <= tables:
                self.close()
                raise IntegrityError(f"{self.path} is not an audit ledger: it has no "
                                     f"{' or '.join(sorted({'entries', 'checkpoints'} - tables))} table "
                                     f"({'an empty file' if self.path.stat().st_size == 0 else 'another database'}).")
            return
        with self._connect() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS entries (
                tenant TEXT NOT NULL, seq INTEGER NOT NULL, ts TEXT NOT NULL, operation TEXT NOT NULL,
                params_digest TEXT NOT NULL, summary TEXT NOT NULL, prev_hash TEXT NOT NULL,
                record_hash TEXT NOT NULL, PRIMARY KEY (tenant, seq))""")
            db.execute("""CREATE TABLE IF NOT EXISTS checkpoints (
                tenant TEXT NOT NULL, size INTEGER NOT NULL, root_hash TEXT NOT NULL, ts TEXT NOT NULL,
                key_id TEXT NOT NULL, signature TEXT NOT NULL, public_key TEXT NOT NULL)""")

    def __repr__(self) -> str:
        return f"AuditLedger(path={str(self.path)!r}, tenant={self.tenant!r}, entries={self.size()})"

    def _connect(self) -> _Conn:
        """The ledger's one connection (opened lazily, shared by threads under a lock)."""
        if self._db is None:
            self._db = sqlite_connect(self.path, readonly=self.readonly, timeout=60, check_same_thread=False)
        return _Conn(self._db, self._db_lock)

    def close(self) -> None:
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------ append
    def append(self, operation: str, params: dict[str, Any] | None = None, *,
               summary: dict[str, Any] | None = None) -> Entry:
        """Durably append one entry (digest of ``params``; ``summary`` of non-secret scalars in clear)."""
        if self.readonly:
            raise ConfigError("this ledger was opened read-only (for verification); it cannot be appended to.")
        if not isinstance(operation, str) or not operation:
            raise ConfigError("ledger operation must be a non-empty string.")
        try:
            digest = hashlib.sha256(canonical_json(params or {})).hexdigest()
        except (TypeError, ValueError):
            digest = hashlib.sha256(repr(sorted((params or {}).items())).encode()).hexdigest()
        summ = clean_summary(summary or {})
        with self._connect() as db:
            self._append_tx(db, operation, digest, summ)
            entry = self._last_appended
        if self.signer is not None and operation in SIGNED_AFTER:
            self.checkpoint()
        return entry

    def _append_tx(self, db: sqlite3.Connection, operation: str, digest: str, summ: dict[str, Any]) -> None:
        with immediate_tx(db):  # BEGIN IMMEDIATE serialises writers across processes
            last = db.execute("SELECT seq, record_hash FROM entries WHERE tenant=? ORDER BY seq DESC LIMIT 1",
                              (self.tenant,)).fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (0, GENESIS)
            e = Entry(seq, datetime.now(timezone.utc).isoformat(), self.tenant, operation, digest, summ, prev, "")
            e.record_hash = record_hash(e.body())
            db.execute("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?)",
                       (self.tenant, e.seq, e.ts, e.operation, e.params_digest, canonical_json(summ).decode(),
                        e.prev_hash, e.record_hash))
        self._last_appended = e

    # ------------------------------------------------------------------ read
    def _rows(self, start: int = 0, stop: int | None = None) -> list[tuple[Any, ...]]:
        with self._connect() as db:
            q = "SELECT seq, ts, tenant, operation, params_digest, summary, prev_hash, record_hash FROM entries " \
                "WHERE tenant=? AND seq>=?" + (" AND seq<?" if stop is not None else "") + " ORDER BY rowid"
            args = (self.tenant, start) + ((stop,) if stop is not None else ())
            try:
                return db.execute(q, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise IntegrityError(f"the audit ledger {self.path.name} is unreadable ({exc}).") from None

    @staticmethod
    def _entry(r: tuple[Any, ...]) -> Entry:
        return Entry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])

    def size(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM entries WHERE tenant=?", (self.tenant,)).fetchone()[0])

    def head_info(self) -> tuple[int, str]:
        """(number of entries, head hash) in one query: cheap enough for a live display."""
        with self._connect() as db:
            r = db.execute("SELECT seq, record_hash FROM entries WHERE tenant=? ORDER BY seq DESC LIMIT 1",
                           (self.tenant,)).fetchone()
        return (r[0] + 1, r[1]) if r else (0, GENESIS)

    def entries(self, start: int = 0, stop: int | None = None) -> list[Entry]:
        return [self._entry(r) for r in self._rows(start, stop)]

    def tail(self, n: int = 10) -> list[Entry]:
        size = self.size()
        return self.entries(max(0, size - n))

    def head(self) -> str:
        """Hash of the last entry (GENESIS when empty)."""
        t = self.tail(1)
        return t[0].record_hash if t else GENESIS

    def _leaf_hashes(self, size: int | None = None) -> list[bytes]:
        rows = self._rows(0, size)
        return [merkle.leaf_hash(bytes.fromhex(r[7])) for r in rows]

    def root(self, size: int | None = None) -> str:
        return merkle.root(self._leaf_hashes(size)).hex()

    # ------------------------------------------------------------------ proofs
    def inclusion_proof(self, seq: int, *, tree_size: int | None = None) -> dict[str, Any]:
        leaves = self._leaf_hashes(tree_size)
        if not 0 <= seq < len(leaves):
            raise ConfigError(f"entry {seq} is not in a tree of size {len(leaves)}.")
        return {"seq": seq, "tree_size": len(leaves), "leaf_hash": leaves[seq].hex(),
                "root_hash": merkle.root(leaves).hex(),
                "proof": [p.hex() for p in merkle.inclusion_proof(seq, leaves)]}

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> dict[str, Any]:
        leaves = self._leaf_hashes(new_size)
        if not 0 < old_size <= len(leaves):
            raise ConfigError(f"need 0 < old_size <= {len(leaves)}, got {old_size}.")
        return {"old_size": old_size, "new_size": len(leaves), "old_root": merkle.root(leaves[:old_size]).hex(),
                "new_root": merkle.root(leaves).hex(),
                "proof": [p.hex() for p in merkle.consistency_proof(old_size, leaves)]}

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> SignedCheckpoint:
        """Sign (size, root, time) with the workspace signer and store it."""
        if self.signer is None:
            raise ConfigError("this ledger has no signer; pass signer= to sign checkpoints.")
        if self.readonly:
            raise ConfigError("this ledger was opened read-only (for verification); it cannot sign checkpoints.")
        size, root_hex = self._current_root()
        ts = datetime.now(timezone.utc).isoformat()
        sig = self.signer.sign(checkpoint_message(self.tenant, size, root_hex, ts), context=CHECKPOINT_CONTEXT)
        cp = SignedCheckpoint(size, root_hex, ts, self.tenant, self.signer.key_id, base64.b64encode(sig).decode(),
                              base64.b64encode(self.signer.public_key().raw).decode())
        with self._connect() as db:
            db.execute("INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?)",
                       (self.tenant, cp.size, cp.root_hash, cp.timestamp, cp.key_id, cp.signature, cp.public_key))
        return cp

    def _current_root(self) -> tuple[int, str]:
        """(size, root hex) of the ledger now: the cached frontier extended by the entries appended since
        (by any process), so signing after every save costs O(new entries), not O(n). If the entry at the
        cached boundary no longer has the hash the frontier was built from, the tree is rebuilt from scratch."""
        with self._db_lock:
            f = self._frontier
            if f.size:
                r = self._rows(f.size - 1, f.size)
                if not r or r[0][7] != self._frontier_head:
                    f, self._frontier, self._frontier_head = merkle.Frontier(), merkle.Frontier(), GENESIS
            rows = self._rows(f.size)
            for row in rows:
                if row[0] != f.size:
                    # not contiguous (an entry is missing): sign what the entries really are
                    leaves = self._leaf_hashes()
                    return len(leaves), merkle.root(leaves).hex()
                f.push(merkle.leaf_hash(bytes.fromhex(row[7])))
                self._frontier_head = row[7]
            return f.size, f.root().hex()

    def checkpoints(self) -> list[SignedCheckpoint]:
        with self._connect() as db:
            try:
                rows = db.execute("SELECT size, root_hash, ts, tenant, key_id, signature, public_key FROM checkpoints "
                                  "WHERE tenant=? ORDER BY rowid", (self.tenant,)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise IntegrityError(f"the audit ledger {self.path.name} is unreadable ({exc}).") from None
        return [SignedCheckpoint(*r) for r in rows]

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The most recent signed checkpoint (export it and keep it elsewhere to detect a later rollback)."""
        cps = self.checkpoints()
        return cps[-1] if cps else None

    # ------------------------------------------------------------------ verification
    def verify(self, *, public_key: Any = None, trusted_checkpoints: Any = ()) -> VerifyReport:
        """Recompute the chain and the Merkle roots; check every signed checkpoint against them.

        Detects edited, deleted, inserted or reordered entries (chain/sequence breaks) and truncation,
        rollback or forks behind a signed checkpoint (its root no longer matches the prefix). Checkpoint
        signatures are verified with ``public_key`` if given, else with this ledger's signer.

        The checkpoints stored in the ledger file can be deleted together with the entries they cover
        by whoever can write the file. ``trusted_checkpoints`` (``SignedCheckpoint`` objects or their
        ``to_dict()`` form, kept elsewhere: a copy you exported, a TGSP package's evidence) are checked
        the same way, so truncation or a rollback of the whole file behind them is still detected.
        """
        rows = self._rows()
        try:
            external = [cp if isinstance(cp, SignedCheckpoint) else SignedCheckpoint.from_dict(cp)
                        for cp in (trusted_checkpoints or ())]
        except IntegrityError as exc:
            raise ConfigError(f"trusted_checkpoints must be SignedCheckpoint objects or their to_dict() form: "
                              f"{exc}") from None
        if any(cp.tenant != self.tenant for cp in external):
            raise ConfigError(f"a trusted checkpoint belongs to another tenant than this ledger's ({self.tenant!r}).")
        cps = self.checkpoints() + external
        # Roots of every checkpointed prefix come from one streaming pass (O(n) hashes in all, not O(n) per checkpoint).
        wanted = {cp.size for cp in cps}
        prefix_roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT} if 0 in wanted else {}
        tree = merkle.Frontier()
        prev = GENESIS
        # json's C string encoder is exactly what canonical_json (ensure_ascii=False) writes for a str.
        from json.encoder import encode_basestring as q

        sha, fromhex = hashlib.sha256, bytes.fromhex
        for i, (seq, ts, tenant, op, pdig, summ, prev_hash, rh) in enumerate(rows):
            if seq != i:
                return self._report(False, i, 0, i, f"sequence break: expected entry {i}, found {seq} "
                                    "(an entry was deleted, inserted or reordered).")
            if prev_hash != prev:
                return self._report(False, i, 0, seq, f"entry {seq}: prev_hash does not match entry "
                                    f"{seq - 1}'s record hash (chain broken).")
            # canonical_json(body) built directly: keys in sorted order, summary already canonical text
            try:
                body = (f'{{"operation":{q(op)},"params_digest":{q(pdig)},"prev_hash":{q(prev_hash)},'
                        f'"seq":{seq},"summary":{summ},"tenant":{q(tenant)},"ts":{q(ts)}}}')
            except TypeError:
                return self._report(False, i, 0, seq,
                                    f"entry {seq}: a field has the wrong type (the entry was edited).")
            if sha(body.encode()).hexdigest() != rh:
                return self._report(False, i, 0, seq, f"entry {seq}: record hash does not match its "
                                    "contents (the entry was edited).")
            prev = rh
            tree.push(sha(b"\x00" + fromhex(rh)).digest())
            if tree.size in wanted:
                prefix_roots[tree.size] = tree.root()
        verifier = public_key if public_key is not None else (self.signer.public_key() if self.signer else None)
        for j, cp in enumerate(cps):
            if verifier is not None:
                if cp.key_id != verifier.key_id:
                    return self._report(False, len(rows), j, None, f"checkpoint {j} was signed by an untrusted key.")
                try:
                    verifier.verify(checkpoint_message(cp.tenant, cp.size, cp.root_hash, cp.timestamp),
                                    base64.b64decode(cp.signature), context=CHECKPOINT_CONTEXT)
                except (SignatureError, ValueError, binascii.Error) as exc:
                    return self._report(False, len(rows), j, None, f"checkpoint {j}: {exc}")
            if cp.size > tree.size:
                return self._report(False, len(rows), j, tree.size,
                                    f"truncation or rollback: signed checkpoint {j} covers {cp.size} entries "
                                    f"but the ledger has {tree.size}.")
            if prefix_roots.get(cp.size, b"").hex() != cp.root_hash:
                return self._report(False, len(rows), j, None,
                                    f"fork or rewrite: the first {cp.size} entries no longer match signed "
                                    f"checkpoint {j}'s root.")
        return self._report(True, len(rows), len(cps), None, None, tree.root().hex())

    def _report(self, ok: bool, n: int, ncp: int, bad: int | None, reason: str | None,
                root_hex: str | None = None) -> VerifyReport:
        rep = VerifyReport(ok, n, ncp, bad, reason, root_hex)
        self.last_verification = rep
        return rep

    # ------------------------------------------------------------------ views
    def state(self) -> dict[str, Any]:
        """Small summary for dashboards: entries, head hash, last checkpoint, last verification."""
        cps = self.checkpoints()
        return {"entries": self.size(), "head_hash": self.head(),
                "last_checkpoint": cps[-1].to_dict() if cps else None,
                "last_verification": self.last_verification.to_dict() if self.last_verification else None}

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        rows = [asdict(e) for e in self.entries()]
        df = pd.DataFrame(rows, columns=["seq", "ts", "tenant", "operation", "params_digest", "summary",
                                         "prev_hash", "record_hash"])
        if len(df):
            df["ts"] = pd.to_datetime(df["ts"])
        return df.set_index("seq")


class _Conn:
    """``with ledger._connect() as db``: the shared connection, held under the ledger's lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self.db, self.lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        return self.db

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK" if et else "COMMIT")
        finally:
            self.lock.release()


