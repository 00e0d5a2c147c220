"""The Workspace: one object owns a workspace folder's layout and the objects that live in it.

Layout (every path is relative to the workspace folder)::

    keystore.json     tenant KEKs, wrapped under the root key (security/keys.py)
    identity.json     the publisher signing key, sealed under the root key (security/identity.py)
    artifacts/        encrypted checkpoints + their SQLite index (storage.py)
    audit.sqlite      the audit ledger of every tenant (ledger/)
    privacy.sqlite    the privacy odometer: every charge to every data set's budget (privacy/); never
                      re-created where the audit ledger proves charges were made (docs/DP.md)

Every face takes a Workspace: ``ServiceClient(workspace)``, the CLI's ``--workspace`` and the training
server. A Workspace opens each component once, lazily and thread-safely, and hands out
:class:`Tenant` views (``workspace.tenant("alice")``) that own the tenant's store and ledger. It is
torch-free. It is also path-like (``os.fspath(ws)``, ``ws / "audit.sqlite"``).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .ledger import AuditLedger
    from .privacy import PrivacyOdometer
    from .security.keys import Keystore
    from .security.signing import HybridSigner
    from .storage import ArtifactStore

__all__ = ["DEFAULT_WORKSPACE", "Tenant", "Workspace", "default_workspace_path", "validate_tenant"]

DEFAULT_WORKSPACE = ".tinker_nb"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def validate_tenant(name: Any) -> str:
    """The one tenant-name rule: 1-64 letters, digits, '-' or '_', starting with a letter or digit."""
    if not isinstance(name, str) or not _TENANT.match(name):
        raise ConfigError(f"tenant must be 1-64 letters, digits, '-' or '_' (starting with a letter or digit), "
                          f"got {name!r}.")
    return name


def default_workspace_path() -> Path:
    """``$TINKER_NB_WORKSPACE`` or ``./.tinker_nb``."""
    return Path(os.environ.get("TINKER_NB_WORKSPACE") or DEFAULT_WORKSPACE)


class Workspace:
    """A workspace folder and its keystore, signer, privacy odometer and per-tenant store and ledger."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, passphrase: str | None = None,
                 key_file: str | os.PathLike[str] | None = None, create: bool = True) -> None:
        if isinstance(path, Workspace):
            raise ConfigError("pass the Workspace itself, not Workspace(Workspace(...)).")
        self.path = Path(path if path is not None else default_workspace_path()).expanduser().resolve()
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"workspace {self.path} is a file; give a folder.")
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the workspace {self.path}: {exc.strerror or exc}; give a folder "
                                  "you can write to.") from None
        elif not self.path.is_dir():
            raise ConfigError(f"workspace {self.path} does not exist.")
        self._passphrase = passphrase
        self._key_file = key_file
        self._lock = threading.RLock()
        self._keystore: Keystore | None = None
        self._signer: HybridSigner | None = None
        self._odometer: PrivacyOdometer | None = None
        self._tenants: dict[str, Tenant] = {}

    def __repr__(self) -> str:  # no secrets
        return f"Workspace({str(self.path)!r})"

    # -- path-like ---------------------------------------------------------------------------
    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: str | os.PathLike[str]) -> Path:
        return self.path / other

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Workspace):
            return self.path == other.path
        if isinstance(other, (str, os.PathLike)):
            return self.path == Path(other).resolve()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.path)

    # -- layout ------------------------------------------------------------------------------
    @property
    def ledger_path(self) -> Path:
        return self.path / "audit.sqlite"

    @property
    def odometer_path(self) -> Path:
        return self.path / "privacy.sqlite"

    # -- components (lazy, opened once) ------------------------------------------------------
    @property
    def keystore(self) -> Keystore:
        with self._lock:
            if self._keystore is None:
                from .security.keys import Keystore

                self._keystore = Keystore.open(self.path, passphrase=self._passphrase, key_file=self._key_file)
            return self._keystore

    @property
    def signer(self) -> HybridSigner:
        """The workspace's publisher identity (signs ledger checkpoints and, by default, packages)."""
        with self._lock:
            if self._signer is None:
                from .security.identity import workspace_signer

                self._signer = workspace_signer(self.path, self.keystore)
            return self._signer

    @property
    def odometer(self) -> PrivacyOdometer:
        """The privacy odometer, checked against what the audit ledger proves it holds.

        Opening it raises :class:`~tinker_nb.errors.IntegrityError` (and changes nothing) when
        ``privacy.sqlite`` is missing, or holds fewer charges for a data set than the ledger's
        ``attach_dataset``/``optim_step`` entries prove were made: restore it from a backup (docs/DP.md).
        """
        with self._lock:
            if self._odometer is None:
                from .ledger.log import privacy_floors
                from .privacy import PrivacyOdometer

                ledger = self.ledger_path
                odometer = PrivacyOdometer(self.odometer_path, floors=lambda: privacy_floors(ledger))
                odometer.charges("", "")  # opens (or, in a new workspace, creates) it now: a refusal comes here
                self._odometer = odometer
            return self._odometer

    def tenant(self, name: str = "default", *, secret: str | bytes | None = None, recreate: bool = False) -> Tenant:
        """The view of one tenant (validated; its keys are created on first use of its store or ledger).

        ``secret``: the tenant's own secret (created with it, or unlocking it); ``recreate=True`` allows
        re-creating a crypto-shredded tenant name (docs/SECURITY.md).
        """
        name = validate_tenant(name)
        with self._lock:
            t = self._tenants.get(name)
            if t is None or secret is not None or recreate:
                t = Tenant(self, name, secret=secret, recreate=recreate)
                self._tenants[name] = t
            return t

    def tenants(self) -> list[str]:
        return list(self.keystore.tenants())

    def close(self) -> None:
        with self._lock:
            for t in self._tenants.values():
                t.close()
            if self._odometer is not None:
                self._odometer.close()


class Tenant:
    """One tenant of a workspace: its artifact store and its view of the audit ledger."""

    def __init__(self, workspace: Workspace, name: str, *, secret: str | bytes | None = None,
                 recreate: bool = False) -> None:
        self.workspace = workspace
        self.name = name
        self._secret = secret
        self._recreate = recreate
        self._lock = threading.RLock()
        self._store: ArtifactStore | None = None
        self._ledger: AuditLedger | None = None
        self._ready = False

    def __repr__(self) -> str:
        return f"Tenant({self.name!r}, workspace={str(self.workspace.path)!r})"

    def _ensure_keys(self) -> Keystore:
        ks = self.workspace.keystore
        with self._lock:
            if not self._ready:
                if self.name not in ks.tenants():
                    ks.create_tenant(self.name, secret=self._secret, recreate=self._recreate)
                    created = True
                else:
                    created = False
                    if self._secret is not None:
                        ks.unlock_tenant(self.name, self._secret)
                self._secret = None  # never kept longer than needed
                self._ready = True
                if created:
                    self._ledger_view().append("create_tenant", {"tenant": self.name},
                                                    summary={"tenant": self.name})
        return ks

    def _ledger_view(self) -> AuditLedger:
        with self._lock:
            if self._ledger is None:
                from .ledger import AuditLedger

                self._ledger = AuditLedger(self.workspace.ledger_path, tenant=self.name, signer=self.workspace.signer)
            return self._ledger

    @property
    def keystore(self) -> Keystore:
        return self._ensure_keys()

    @property
    def store(self) -> ArtifactStore:
        with self._lock:
            if self._store is None:
                from .storage import ArtifactStore

                self._store = ArtifactStore(self.workspace.path, self._ensure_keys(), tenant=self.name)
            return self._store

    @property
    def ledger(self) -> AuditLedger:
        self._ensure_keys()
        return self._ledger_view()

    def collect_garbage(self, *, older_than_s: float = 3600.0) -> Any:
        """Reconcile this tenant's files, index and ledger after crashes (storage.py); returns the report."""
        return self.store.collect_garbage(older_than_s=older_than_s, ledger=self.ledger)

    @property
    def odometer(self) -> PrivacyOdometer:
        return self.workspace.odometer

    def audit(self, operation: str, params: dict[str, Any], summary: dict[str, Any] | None = None) -> None:
        """Append one entry to the ledger (digest of params; only the non-secret summary in clear)."""
        self.ledger.append(operation, params, summary=summary or {})

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None and hasattr(self._ledger, "close"):
                self._ledger.close()
