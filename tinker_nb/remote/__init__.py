"""The remote face of the Python API: ``RemoteServiceClient`` talks to `tinker-nb serve` over HTTP (httpx).

``RemoteServiceClient(base_url=..., api_key=...)`` (defaults: ``TINKER_NB_BASE_URL``,
``TINKER_NB_API_KEY``) returns training clients with the in-kernel ``TrainingClient`` methods; errors
arrive as the same ``TinkerError`` subclasses. The private data stays on the server: the client only
ever holds opaque draw ids.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "NotFoundError",
    "RemoteServiceClient",
    "RemoteTrainingClient",
    "ServerBusyError",
]

from .wire import AuthenticationError, NotFoundError, ServerBusyError


def __getattr__(name: str) -> Any:
    if name in ("RemoteServiceClient", "RemoteTrainingClient"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'tinker_nb.remote' has no attribute {name!r}")
