"""Durable file and SQLite primitives shared by the keystore, artifact store, ledger and TGSP writer.

Torch-free and dependency-free. One place for the crash-safety rules the formats promise:

- :func:`atomic_write` / :func:`atomic_file`: write a temp file in the destination folder, fsync it,
  rename it over the destination, fsync the folder. A reader (or a crash) sees the old bytes or the
  new bytes, never a mix. Temp names start with ``.`` and end with ``.tmp`` (``temp_prefix`` may say more).
- :func:`sqlite_connect` and :func:`immediate_tx`: WAL + ``synchronous=FULL`` connections and
  ``BEGIN IMMEDIATE … COMMIT`` (rollback on any exception) transactions; ``readonly=True`` opens
  the file with ``mode=ro`` so that a verifier never creates tables or files in what it checks.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "atomic_write", "fsync_dir", "immediate_tx", "sqlite_connect"]


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a folder so that a rename or unlink inside it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, mode: int = 0o600, temp_prefix: str | None = None,
                temp_suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """``with atomic_file(p) as f: f.write(...)`` — ``p`` appears complete on success, untouched on error.

    The temp file lives in ``p``'s folder (same file system, so the rename is atomic), is created with
    ``mode``, fsynced before the rename, and removed if the block raises (including KeyboardInterrupt).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix or f".{path.name}.", suffix=temp_suffix)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp file, fsync, rename, fsync folder)."""
    with atomic_file(path, mode=mode) as f:
        f.write(data)


def sqlite_connect(path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = 30.0,
                   check_same_thread: bool = True) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit, see :func:`immediate_tx`).

    Read-write: WAL journal and ``synchronous=FULL`` (a committed transaction survives a power cut).
    ``readonly=True``: the file must exist; it is opened with ``mode=ro`` and nothing is written to it.
    """
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                               check_same_thread=check_same_thread)
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


@contextlib.contextmanager
def immediate_tx(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (takes the write lock now, so read-modify-write is safe across processes),
    ``COMMIT`` on success, ``ROLLBACK`` on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
