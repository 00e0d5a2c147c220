"""The tinker_nb error hierarchy.

Every refused call raises a subclass of :class:`TinkerError` whose message says what was wrong
and what to do. A refused call leaves the session, the artifact store and the ledger unchanged.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "DataError",
    "IntegrityError",
    "KeyAccessError",
    "PackageError",
    "SignatureError",
    "StateError",
    "TinkerError",
    "TrustError",
]


class TinkerError(Exception):
    """Base class of every error tinker_nb raises on purpose."""

    entry: str | None  # set by package verification: the package entry the error is about (not always set)


class ConfigError(TinkerError, ValueError):
    """A configuration value is invalid or inconsistent (fix the config and retry)."""


class DataError(TinkerError, ValueError):
    """A batch or data set is malformed: wrong keys, ragged shapes, ids outside the vocabulary."""


class StateError(TinkerError, RuntimeError):
    """The call is not valid in the session's current state (closed client, nothing accumulated)."""


class BudgetExceededError(TinkerError):
    """The step would take ε past the configured ``target_epsilon``; nothing was changed."""


class IntegrityError(TinkerError):
    """Stored or received bytes failed an integrity check (tampering, truncation, corruption)."""


class KeyAccessError(TinkerError):
    """A key is missing, destroyed, belongs to another tenant, or the passphrase is wrong."""


class SignatureError(TinkerError):
    """A signature is missing, malformed, or does not verify."""


class PackageError(TinkerError):
    """A TGSP package is malformed: missing, extra or duplicate entries, bad paths, oversized."""


class TrustError(TinkerError):
    """A signer is not in the trust store, or a package has expired."""
