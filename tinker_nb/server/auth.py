"""API-key authentication: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` → the key's tenant.

A missing, unknown or revoked key answers 401 (``AuthenticationError``). Every resource is looked up
within the key's tenant, so another tenant's ids answer 404 exactly like unknown ids.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ..remote.wire import AuthenticationError
from .apikeys import ApiKeyInfo

__all__ = ["key_from_headers", "principal_from_headers", "require_principal"]


def key_from_headers(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    x = headers.get(b"x-api-key")
    if x:
        return x.decode("latin-1").strip()
    return None


def principal_from_headers(state: Any, headers: dict[bytes, bytes]) -> ApiKeyInfo | None:
    return state.apikeys.authenticate(key_from_headers(headers))


async def require_principal(request: Request) -> ApiKeyInfo:
    """FastAPI dependency: the authenticated key (tenant), or 401."""
    cached = request.scope.get("state", {}).get("principal")
    if cached is not None:
        return cached
    headers = {k.lower(): v for k, v in request.scope.get("headers", [])}
    state = request.app.state.tinker
    if key_from_headers(headers) is None:
        raise AuthenticationError("missing API key: send `Authorization: Bearer tml-...` or `X-API-Key: tml-...` "
                                  "(create one with `tinker-nb apikey create --workspace DIR --tenant NAME`).")
    p = principal_from_headers(state, headers)
    if p is None:
        raise AuthenticationError("invalid or revoked API key.")
    return p
