"""The wire protocol shared by ``tinker-nb serve`` and the remote client (torch-free, FastAPI-free).

* Errors travel as ``{"error": {"type": "<TinkerError subclass name>", "message": "..."}}`` with a 4xx
  status; the client raises the same subclass. :data:`STATUS` maps each type to its HTTP status.
* Non-finite floats (ε = ∞ without DP, a NaN loss on a noise-only step) are sent as the strings
  ``"Infinity"``, ``"-Infinity"`` and ``"NaN"`` (JSON has no such numbers); the client turns them back.
* Headers: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; ``Idempotency-Key`` on POSTs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .. import errors as _errors
from ..errors import DataError, KeyAccessError, TinkerError

__all__ = [
    "API_KEY_PREFIX",
    "API_PREFIX",
    "IDEMPOTENCY_HEADER",
    "STATUS",
    "AuthenticationError",
    "NotFoundError",
    "ServerBusyError",
    "WireObject",
    "error_class",
    "error_type",
    "from_wire",
    "status_for",
    "to_jsonable",
]

API_PREFIX = "/api/v1"
API_KEY_PREFIX = "tml-"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class NotFoundError(TinkerError, LookupError):
    """No such training client, future, draw, data set or checkpoint for this tenant (HTTP 404).

    Another tenant's ids answer exactly like unknown ids.
    """


class AuthenticationError(KeyAccessError):
    """The API key is missing, unknown or revoked (HTTP 401)."""


class ServerBusyError(TinkerError):
    """The server is at capacity (``--max-clients``) or this client's queue is full (HTTP 429, Retry-After)."""


def _classes() -> dict[str, type[TinkerError]]:
    out: dict[str, type[TinkerError]] = {}
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        if isinstance(cls, type) and issubclass(cls, TinkerError):
            out[name] = cls
    for cls in (NotFoundError, AuthenticationError, ServerBusyError):
        out[cls.__name__] = cls
    try:  # torch-free; the in-kernel error for an unknown checkpoint id
        from ..storage import ArtifactNotFoundError

        out["ArtifactNotFoundError"] = ArtifactNotFoundError
    except ImportError:  # pragma: no cover
        pass
    return out


STATUS: dict[str, int] = {
    "TinkerError": 400,
    "ConfigError": 422,
    "DataError": 422,
    "StateError": 409,
    "BudgetExceededError": 409,
    "IntegrityError": 409,
    "KeyAccessError": 403,
    "AuthenticationError": 401,
    "SignatureError": 422,
    "PackageError": 422,
    "TrustError": 422,
    "NotFoundError": 404,
    "ArtifactNotFoundError": 404,
    "ServerBusyError": 429,
}


def error_type(exc: BaseException) -> str:
    """The wire name of ``exc``: its own class name if the client knows it, else its nearest known base."""
    known = _classes()
    for cls in type(exc).__mro__:
        if cls.__name__ in known and issubclass(cls, TinkerError):
            return cls.__name__
    return "TinkerError"


def status_for(type_name: str) -> int:
    return STATUS.get(type_name, 400)


def error_class(type_name: str) -> type[TinkerError]:
    """The exception class the client raises for a wire error type (unknown names: TinkerError)."""
    return _classes().get(type_name, TinkerError)


def make_error(type_name: str, message: str) -> TinkerError:
    cls = error_class(type_name)
    try:
        exc = cls(message)
    except Exception:  # noqa: BLE001 - a subclass with another constructor
        exc = TinkerError(message)
    return exc


# ---------------------------------------------------------------------- values
_NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}
# Keys whose string values are user text and must never be turned into floats.
_TEXT_SUBTREES = frozenset({"metadata", "user", "samples", "records", "public", "prompt", "completion", "name",
                            "prompts", "message", "stop"})


def to_jsonable(obj: Any, _depth: int = 0) -> Any:
    """A JSON-safe copy of ``obj`` (dataclasses, ``to_dict()``, mappings, sequences, tensors, numpy)."""
    if _depth > 32:
        return str(obj)
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, _depth + 1) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        import base64

        return base64.b64encode(bytes(obj)).decode()
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        try:
            return to_jsonable(to_dict(), _depth + 1)
        except Exception:  # noqa: BLE001 - fall through to the other forms
            pass
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name), _depth + 1) for f in dataclasses.fields(obj)}
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalar
        return to_jsonable(obj.item(), _depth + 1)
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return to_jsonable(obj.tolist(), _depth + 1)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return {k: to_jsonable(v, _depth + 1) for k, v in vars(obj).items() if not k.startswith("_")}
    return str(obj)


class WireObject(dict):
    """A result received from the server: a dict whose keys also read as attributes (``r.loss``).

    Nested dicts are WireObjects too; ``to_dict()`` gives a plain dict.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return _plain(self)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.items())
        return f"{type(self).__name__}({inner})"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def from_wire(obj: Any, *, _text: bool = False, cls: type[dict] = WireObject) -> Any:
    """Undo :func:`to_jsonable` for display: dicts become WireObjects, non-finite markers floats."""
    if isinstance(obj, dict):
        return cls({k: from_wire(v, _text=_text or k in _TEXT_SUBTREES, cls=WireObject) for k, v in obj.items()})
    if isinstance(obj, list):
        return [from_wire(v, _text=_text, cls=WireObject) for v in obj]
    if isinstance(obj, str) and not _text and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


# Re-exported for the server's 413 answer.
PayloadTooLargeType = DataError.__name__
