"""The per-data-set privacy odometer: every charge to a data set's budget, durable, never rolled back.

A *pool* is what a budget belongs to: ``dataset:<sha256 of the tokenised records>`` for an attached data
set, or ``caller-supplied`` for batches a caller passes without attaching a data set. Every training
client of a tenant that trains on a pool charges it, across kernels, processes and restarts, in one
SQLite file of the workspace (``privacy.sqlite``). Nothing in the public API removes or lowers a
charge: ``load_state`` restores weights, never the odometer.

Torch-free. The charge and its budget check run in one ``BEGIN IMMEDIATE`` transaction, so two
processes cannot both take the last step that fits. Durability: SQLite WAL with ``synchronous=FULL`` (a
committed charge survives a power cut, so the ledger entry written after it never proves more than the
file holds) and :meth:`PrivacyOdometer.flush` (a WAL checkpoint) before a checkpoint or package leaves the
process.

Never started afresh: ``floors`` (the workspace passes what its audit ledger proves, see
:func:`tinker_nb.ledger.log.privacy_floors`) are the charges each ``(tenant, pool)`` is known to hold. Opening
the file refuses (IntegrityError, nothing written) when it is missing while anything is proved, or holds fewer
charges for a pool than proved (an empty or older file put in its place); and the file in use being deleted
or replaced under an open odometer is refused at its next use. There is no way to reset a budget.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import accounting
from ..errors import ConfigError, IntegrityError
from ..fsio import immediate_tx

__all__ = ["CALLER_POOL", "Composition", "PrivacyOdometer", "dataset_pool"]

CALLER_POOL = "caller-supplied"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
  tenant TEXT NOT NULL, pool TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
  PRIMARY KEY (tenant, pool));
CREATE TABLE IF NOT EXISTS charges (
  tenant TEXT NOT NULL, pool TEXT NOT NULL, client TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('poisson', 'gaussian', 'unprotected')),
  sigma REAL NOT NULL, sample_rate REAL NOT NULL,
  steps INTEGER NOT NULL DEFAULT 0 CHECK (steps >= 0), mu2 REAL NOT NULL DEFAULT 0 CHECK (mu2 >= 0),
  updated REAL NOT NULL,
  PRIMARY KEY (tenant, pool, client, kind, sigma, sample_rate));
CREATE TRIGGER IF NOT EXISTS charges_never_shrink BEFORE UPDATE ON charges
  WHEN NEW.steps < OLD.steps OR NEW.mu2 < OLD.mu2
  BEGIN SELECT RAISE(ABORT, 'privacy charges never decrease'); END;
CREATE TRIGGER IF NOT EXISTS charges_never_deleted BEFORE DELETE ON charges
  BEGIN SELECT RAISE(ABORT, 'privacy charges are never deleted'); END;
CREATE TABLE IF NOT EXISTS known_noise (
  tenant TEXT NOT NULL, pool TEXT NOT NULL, client TEXT NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (tenant, pool, client));
CREATE TRIGGER IF NOT EXISTS known_noise_never_changed BEFORE UPDATE ON known_noise
  BEGIN SELECT RAISE(ABORT, 'known-noise marks never change'); END;
CREATE TRIGGER IF NOT EXISTS known_noise_never_deleted BEFORE DELETE ON known_noise
  BEGIN SELECT RAISE(ABORT, 'known-noise marks are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS pools_count_never_decreases BEFORE UPDATE ON pools
  WHEN NEW.version < OLD.version
  BEGIN SELECT RAISE(ABORT, 'a pool''s count of charges never decreases'); END;
CREATE TRIGGER IF NOT EXISTS pools_never_deleted BEFORE DELETE ON pools
  BEGIN SELECT RAISE(ABORT, 'pools are never deleted'); END;
"""
_RESTORE = ("Restore privacy.sqlite from your backup (stop every process using this workspace first; copy "
            "privacy.sqlite-wal with it if your backup has one, else delete a leftover one); never delete or "
            "replace it: it is the only record of the privacy budget already spent, and no option starts the "
            "budgets afresh.")


def _short(db: sqlite3.Connection, floors: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], tuple[int, int]]:
    """The proved pools with fewer charges in ``db`` than proved: {(tenant, pool): (have, proved)}."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='pools'").fetchone() is None:
        have: dict[tuple[str, str], int] = {}
    else:
        have = {(t, p): int(v) for t, p, v in db.execute("SELECT tenant, pool, version FROM pools")}
    return {k: (have.get(k, 0), int(n)) for k, n in floors.items() if have.get(k, 0) < int(n)}


def _describe(pools: Mapping[tuple[str, str], Any], *, have: bool = False) -> str:
    items = sorted(pools.items())
    parts = []
    for (tenant, pool), v in items[:3]:
        name = f"{pool[:20]}…" if len(pool) > 21 else pool
        parts.append(f"tenant {tenant!r} pool {name} ({v[0]} charges, {v[1]} proved)" if have
                     else f"tenant {tenant!r} pool {name} ({v} charges)")
    more = f" and {len(items) - 3} more pools" if len(items) > 3 else ""
    return "; ".join(parts) + more


def dataset_pool(digest: str) -> str:
    """The pool name of an attached data set."""
    return f"dataset:{digest}"


@dataclass(frozen=True)
class Composition:
    """What a pool (or one client) has released: Poisson-subsampled Gaussian steps and a caller part.

    ``poisson`` is a run-length list of ``(σ, q, steps)`` (order does not matter: composition commutes);
    ``gaussian_mu2`` is the μ² of the worst-case record over caller-supplied steps (μ-GDP, no
    amplification); ``version`` counts the charges the pool has received; ``noise_known_clients`` counts
    the clients that charged the pool with a noise seed fixed by the caller (``noise_seed=``): whoever
    knows such a seed can remove that noise, so no run on the pool is a valid guarantee any more.
    """

    poisson: tuple[tuple[float, float, int], ...] = ()
    gaussian_mu2: float = 0.0
    version: int = 0
    by_client: dict[str, int] = field(default_factory=dict, compare=False)
    unprotected_steps: int = 0  # steps a client took on this data set WITHOUT DP: ε is unbounded
    noise_known_clients: int = 0  # clients whose noise seed was fixed by the caller charged this pool

    @property
    def steps(self) -> int:
        return int(sum(n for _, _, n in self.poisson))

    @property
    def empty(self) -> bool:
        return self.steps == 0 and self.gaussian_mu2 <= 0 and self.unprotected_steps == 0

    def add_poisson(self, sigma: float, q: float, n: int = 1) -> Composition:
        runs = dict(((s, qq), k) for s, qq, k in self.poisson)
        runs[(float(sigma), float(q))] = runs.get((float(sigma), float(q)), 0) + int(n)
        return replace(self, poisson=tuple(sorted((s, qq, k) for (s, qq), k in runs.items())))

    def add_gaussian(self, mu2: float) -> Composition:
        return replace(self, gaussian_mu2=self.gaussian_mu2 + float(mu2))

    def add_unprotected(self, n: int = 1) -> Composition:
        return replace(self, unprotected_steps=self.unprotected_steps + n)

    def report(self, *, delta: float, accountant: str = "pld") -> accounting.EpsilonReport:
        """ε of everything in this composition at ``delta`` (min of the accountant's and RDP's bounds).

        Infinite once any client trained on the data set without DP.
        """
        if self.unprotected_steps:
            inf = float("inf")
            return accounting.EpsilonReport(inf, "none (steps without DP)", inf, inf, None)
        return accounting.report(list(self.poisson), delta=delta, accountant=accountant,
                                 gaussian_mu2=self.gaussian_mu2)

    def to_dict(self) -> dict[str, Any]:
        return {"poisson": [list(h) for h in self.poisson], "gaussian_mu2": self.gaussian_mu2, "steps": self.steps,
                "unprotected_steps": self.unprotected_steps, "noise_known_clients": self.noise_known_clients}


class PrivacyOdometer:
    """The charges of every pool of a workspace, in ``privacy.sqlite`` (one connection per object)."""

    def __init__(self, path: str | Path, *,
                 floors: Callable[[], Mapping[tuple[str, str], int]] | None = None) -> None:
        """``floors()``: the charges each ``(tenant, pool)`` is proved to hold (read when the file is opened)."""
        self.path = Path(path)
        self._floors = floors
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the connection has open

    def __repr__(self) -> str:
        return f"PrivacyOdometer({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        if self._db is not None:
            if self._file is not None and self._identity() != self._file:
                self.close()
                raise IntegrityError(
                    f"the privacy odometer {self.path} was deleted or replaced while this process had it open: "
                    f"its charges are not recorded any more, so no step is taken. {_RESTORE} Then start a new "
                    "session.")
            return self._db
        memory = str(self.path) == ":memory:"
        floors = dict(self._floors()) if self._floors is not None else {}  # read before the file, never after
        if not memory and not self.path.exists():
            if floors:
                raise IntegrityError(
                    f"the privacy odometer {self.path.name} is missing from {self.path.parent}, but the audit "
                    f"ledger proves charges to {_describe(floors)}: starting it empty would reset those data sets' "
                    f"privacy budgets to zero. {_RESTORE} Nothing was changed.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        try:
            if floors:
                short = _short(db, floors)
                if short:
                    raise IntegrityError(
                        f"the privacy odometer {self.path} holds fewer charges than the audit ledger proves were "
                        f"made ({_describe(short, have=True)}): it is empty, older, or another workspace's, and "
                        f"using it would understate the privacy budget spent. {_RESTORE} Nothing was changed.")
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + FULL: a committed charge survives a crash of the process (kill -9) and a power loss, so the
            # ledger entry written after it never proves more than the file holds; flush() checkpoints the WAL
            # before anything durable leaves the process (save_state, package).
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except IntegrityError:
            db.close()
            raise
        except sqlite3.DatabaseError as exc:
            db.close()
            raise IntegrityError(f"the privacy odometer {self.path} is not a readable SQLite database "
                                 f"({exc}); restore it from a backup — never delete it: it is the only "
                                 "record of the privacy budget already spent.") from None
        self._db = db
        self._file = None if memory else self._identity()
        return db

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                self._file = None

    @staticmethod
    def _read(db: sqlite3.Connection, tenant: str, pool: str, client: str | None = None) -> Composition:
        row = db.execute("SELECT version FROM pools WHERE tenant=? AND pool=?", (tenant, pool)).fetchone()
        version = int(row[0]) if row else 0
        where, args = "tenant=? AND pool=?", [tenant, pool]
        if client is not None:
            where += " AND client=?"
            args.append(client)
        comp = Composition(version=version)
        by_client: dict[str, int] = {}
        for kind, sigma, q, steps, mu2, cl in db.execute(
                f"SELECT kind, sigma, sample_rate, steps, mu2, client FROM charges WHERE {where} "
                "ORDER BY sigma, sample_rate, client", args):
            if kind == "poisson":
                if steps > 0:
                    comp = comp.add_poisson(sigma, q, steps)
                    by_client[cl] = by_client.get(cl, 0) + int(steps)
            elif kind == "unprotected":
                comp = comp.add_unprotected(int(steps))
            elif mu2 > 0:
                comp = comp.add_gaussian(mu2)
        kw = "tenant=? AND pool=?" + (" AND client=?" if client is not None else "")
        known = int(db.execute(f"SELECT COUNT(*) FROM known_noise WHERE {kw}", args).fetchone()[0])
        return replace(comp, version=version, by_client=by_client, noise_known_clients=known)

    def composition(self, tenant: str, pool: str, *, client: str | None = None) -> Composition:
        """Everything charged to ``pool`` (by every client, or by ``client`` only)."""
        with self._lock:
            return self._read(self._conn(), tenant, pool, client)

    def flush(self) -> None:
        """Sync every committed charge to disk (fsync): called before a checkpoint or package is written."""
        with self._lock:
            self._conn().execute("PRAGMA wal_checkpoint(FULL)")

    def charges(self, tenant: str, pool: str) -> int:
        """How many charges ``pool`` has received (it only grows): what a ledger entry records as proof."""
        with self._lock:
            row = self._conn().execute("SELECT version FROM pools WHERE tenant=? AND pool=?", (tenant, pool)).fetchone()
        return int(row[0]) if row else 0

    def pools(self, tenant: str) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn().execute("SELECT pool FROM pools WHERE tenant=? ORDER BY created",
                                                       (tenant,))]

    def carry_over(self, tenant: str, src: str, dst: str) -> None:
        """Make ``dst`` hold every charge of ``src`` (idempotent: each one is kept as the larger of the two).

        Pools of data sets were once named by an order-sensitive digest; a data set attached now is charged
        under its order-free name, and what its old pool holds is carried over so that nothing is forgotten.
        """
        if src == dst:
            return
        with self._lock:
            db = self._conn()
            if db.execute("SELECT 1 FROM charges WHERE tenant=? AND pool=? LIMIT 1", (tenant, src)).fetchone() is None \
                    and db.execute("SELECT 1 FROM known_noise WHERE tenant=? AND pool=? LIMIT 1",
                                   (tenant, src)).fetchone() is None:
                return
            with immediate_tx(db):
                now = time.time()
                _ensure_pool(db, tenant, dst, now)
                before = db.total_changes
                db.execute(
                    "INSERT INTO charges (tenant, pool, client, kind, sigma, sample_rate, steps, mu2, updated) "
                    "SELECT tenant, ?, 'from ' || pool || ' ' || client, kind, sigma, sample_rate, steps, mu2, ? "
                    "FROM charges WHERE tenant=? AND pool=? AND true "
                    "ON CONFLICT (tenant, pool, client, kind, sigma, sample_rate) DO UPDATE SET "
                    "steps = max(steps, excluded.steps), mu2 = max(mu2, excluded.mu2), updated = excluded.updated "
                    "WHERE excluded.steps > steps OR excluded.mu2 > mu2",
                    (dst, now, tenant, src))
                db.execute("INSERT OR IGNORE INTO known_noise (tenant, pool, client, created) "
                           "SELECT tenant, ?, 'from ' || pool || ' ' || client, ? FROM known_noise "
                           "WHERE tenant=? AND pool=?", (dst, now, tenant, src))
                if db.total_changes != before:
                    _next_version(db, tenant, dst)

    def successors(self, tenant: str, pool: str) -> list[str]:
        """The pools that ``pool``'s charges were carried over to (:meth:`carry_over`); they hold them and more."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT DISTINCT pool FROM charges WHERE tenant=? AND substr(client, 1, ?) = ? AND pool != ?",
                (tenant, len(f"from {pool} "), f"from {pool} ", pool)).fetchall()
        return sorted(r[0] for r in rows)

    def predecessors(self, tenant: str, pool: str) -> list[str]:
        """The pools whose charges were carried over to ``pool`` (:meth:`carry_over`): it holds them all."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT client FROM charges WHERE tenant=? AND pool=? AND substr(client, 1, 5) = 'from ' UNION "
                "SELECT client FROM known_noise WHERE tenant=? AND pool=? AND substr(client, 1, 5) = 'from '",
                (tenant, pool, tenant, pool)).fetchall()
        return sorted({r[0].split(" ")[1] for r in rows if len(r[0].split(" ")) >= 3} - {pool})

    def charge_unprotected(self, tenant: str, pool: str, client: str) -> None:
        """Record a step taken on ``pool`` without DP: from now on the data set's ε is unbounded."""
        with self._lock:
            db = self._conn()
            with immediate_tx(db):
                now = time.time()
                _ensure_pool(db, tenant, pool, now)
                _add_step(db, tenant, pool, client, "unprotected", now)
                _next_version(db, tenant, pool)

    def charge(self, tenant: str, pool: str, client: str, *, poisson: tuple[float, float] | None = None,
               gaussian_mu2: float = 0.0, noise_known: bool = False,
               admit: Callable[[Composition, Composition], None] | None = None) -> Composition:
        """Record one step: a Poisson step ``(σ, q)`` and/or a caller-supplied μ² increase.

        ``admit(current, proposed)`` runs inside the write transaction and may raise (for instance
        :class:`~tinker_nb.errors.BudgetExceededError`): then nothing is recorded. ``noise_known``: the
        step's noise came from a caller-fixed seed; the pool is marked for good (every run on it is invalid).
        """
        if poisson is None and gaussian_mu2 <= 0:
            raise ConfigError("a charge needs a Poisson step or a positive caller-supplied μ².")
        if not math.isfinite(gaussian_mu2) or gaussian_mu2 < 0:
            raise ConfigError(f"caller-supplied μ² must be finite and >= 0, got {gaussian_mu2!r}.")
        with self._lock:
            db = self._conn()
            with immediate_tx(db):
                cur = self._read(db, tenant, pool)
                prop = cur
                if poisson is not None:
                    prop = prop.add_poisson(*poisson)
                if gaussian_mu2 > 0:
                    prop = prop.add_gaussian(gaussian_mu2)
                if admit is not None:
                    admit(cur, prop)
                now = time.time()
                _ensure_pool(db, tenant, pool, now)
                if poisson is not None:
                    _add_step(db, tenant, pool, client, "poisson", now, sigma=poisson[0], sample_rate=poisson[1])
                if gaussian_mu2 > 0:
                    _add_step(db, tenant, pool, client, "gaussian", now, mu2=gaussian_mu2)
                if noise_known:
                    db.execute("INSERT OR IGNORE INTO known_noise (tenant, pool, client, created) VALUES (?, ?, ?, ?)",
                               (tenant, pool, client, now))
                _next_version(db, tenant, pool)
            return self._read(db, tenant, pool)


def _ensure_pool(db: sqlite3.Connection, tenant: str, pool: str, now: float) -> None:
    db.execute("INSERT OR IGNORE INTO pools (tenant, pool, version, created) VALUES (?, ?, 0, ?)", (tenant, pool, now))


def _add_step(db: sqlite3.Connection, tenant: str, pool: str, client: str, kind: str, now: float, *,
              sigma: float = 0.0, sample_rate: float = 0.0, mu2: float = 0.0) -> None:
    """One more step of ``kind`` by ``client`` on ``pool`` (a caller-supplied step adds its μ² too)."""
    db.execute(
        "INSERT INTO charges (tenant, pool, client, kind, sigma, sample_rate, steps, mu2, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (tenant, pool, client, kind, sigma, sample_rate) "
        "DO UPDATE SET steps = steps + 1, mu2 = mu2 + excluded.mu2, updated = excluded.updated",
        (tenant, pool, client, kind, float(sigma), float(sample_rate), float(mu2), now))


def _next_version(db: sqlite3.Connection, tenant: str, pool: str) -> None:
    db.execute("UPDATE pools SET version = version + 1 WHERE tenant=? AND pool=?", (tenant, pool))
