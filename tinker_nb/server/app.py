"""The FastAPI application: ``create_app(workspace)``.

Layers, outermost first: a guard (request-size limit → 413, and idempotency keys: a retried POST with
the same ``Idempotency-Key`` gets the first answer again instead of running twice), JSON error
handlers (every error is ``{"error": {"type", "message"}}`` with a 4xx status, never a traceback),
API-key authentication (:mod:`.auth`), and the REST routes (:mod:`.routes`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import TinkerError
from ..remote.wire import IDEMPOTENCY_HEADER, error_type, status_for
from .runtime import ServerState

__all__ = ["create_app", "error_response"]

log = logging.getLogger("tinker_nb.server")

IDEMPOTENCY_TTL_S = 24 * 3600.0
IDEMPOTENCY_MAX = 50_000


def error_response(type_name: str, message: str, http_status: int | None = None, **extra: Any) -> JSONResponse:
    status = http_status or status_for(type_name)
    headers = {}
    if status == 429:
        headers["Retry-After"] = "1"
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="tinker-nb"'
    return JSONResponse({"error": {"type": type_name, "message": message}, **extra}, status_code=status,
                        headers=headers)


class _IdemEntry:
    __slots__ = ("created", "done", "fingerprint", "response")

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.done = asyncio.Event()
        self.response: tuple[int, list, bytes] | None = None
        self.created = time.monotonic()


class GuardMiddleware:
    """Pure ASGI: body limit (413) and idempotent POSTs, before routing."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.cache: collections.OrderedDict[tuple[str, str], _IdemEntry] = collections.OrderedDict()

    async def _send_json(self, send: Any, status: int, body: dict, headers: list | None = None) -> None:
        data = json.dumps(body).encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        hdrs += headers or []
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": data})

    async def _too_large(self, send: Any) -> None:
        await self._send_json(send, 413, {"error": {"type": "DataError", "message": (
            f"request body is larger than the server's limit of {self.state.max_body_bytes} bytes; upload the data "
            "set in smaller parts or start the server with a larger --max-body-mb.")}})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        limit = self.state.max_body_bytes
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                if int(cl) > limit:
                    await self._too_large(send)
                    return
            except ValueError:
                await self._send_json(send, 400, {"error": {"type": "ConfigError",
                                                             "message": "malformed Content-Length header."}})
                return
        method = scope.get("method", "GET")
        if method not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        idem = headers.get(IDEMPOTENCY_HEADER.lower().encode())
        if idem is None or method != "POST":
            await self.app(scope, replay, send)
            return
        key = idem.decode("latin-1")
        if not 1 <= len(key) <= 200:
            await self._send_json(send, 422, {"error": {"type": "ConfigError", "message":
                                                         "Idempotency-Key must be 1 to 200 characters."}})
            return
        from .auth import principal_from_headers

        principal = principal_from_headers(self.state, headers)
        if principal is None:  # the route answers 401; nothing to remember
            await self.app(scope, replay, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        ck = (principal.tenant, key)
        fp = hashlib.sha256(method.encode() + b" " + scope.get("path", "").encode() + b"?" +
                            scope.get("query_string", b"") + b"\n" + body).hexdigest()
        self._expire()
        entry = self.cache.get(ck)
        if entry is not None:
            if entry.fingerprint != fp:
                await self._send_json(send, 422, {"error": {"type": "ConfigError", "message": (
                    "this Idempotency-Key was already used for a different request; use a new key per operation.")}})
                return
            await entry.done.wait()
            if entry.response is not None:
                status, hdrs, data = entry.response
                await send({"type": "http.response.start", "status": status,
                            "headers": hdrs + [(b"idempotent-replayed", b"true")]})
                await send({"type": "http.response.body", "body": data})
                return
            # the first attempt was not remembered (an error worth retrying): run this one
        entry = _IdemEntry(fp)
        self.cache[ck] = entry
        captured: dict[str, Any] = {"status": 500, "headers": [], "body": []}

        async def capture(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                captured["status"] = msg["status"]
                captured["headers"] = list(msg.get("headers", []))
            elif msg["type"] == "http.response.body":
                captured["body"].append(msg.get("body", b""))
            await send(msg)

        try:
            await self.app(scope, replay, capture)
        finally:
            status = captured["status"]
            if status < 500 and status not in (401, 408, 429):
                entry.response = (status, captured["headers"], b"".join(captured["body"]))
            else:
                self.cache.pop(ck, None)
            entry.done.set()

    def _expire(self) -> None:
        now = time.monotonic()
        while self.cache:
            _k, e = next(iter(self.cache.items()))
            if len(self.cache) > IDEMPOTENCY_MAX or (e.done.is_set() and now - e.created > IDEMPOTENCY_TTL_S):
                self.cache.popitem(last=False)
            else:
                break


def create_app(workspace: Any = None, *, max_clients: int = 16, allow_models: list[str] | None = None,
               passphrase: str | None = None, key_file: str | os.PathLike | None = None,
               max_body_mb: float = 64.0, idle_timeout_s: float = 3600.0) -> FastAPI:
    """The Training API over ``workspace`` (a folder or a ``tinker_nb.workspace.Workspace``).

    ``max_clients`` open training clients at once (then 429 + Retry-After); ``allow_models``: model refs
    tenants may load (default: the embedded model only; ``["*"]`` allows any local path or cached hub id).
    """
    from .. import __version__
    from .routes import build_router

    if workspace is None:
        workspace = os.environ.get("TINKER_NB_WORKSPACE", ".tinker_nb")
    if passphrase is None:
        passphrase = os.environ.get("TINKER_NB_WORKSPACE_PASSPHRASE") or None
    state = ServerState(workspace, max_clients=max_clients, allow_models=allow_models, passphrase=passphrase,
                        key_file=key_file, max_body_bytes=int(max_body_mb * 1024 * 1024),
                        idle_timeout_s=idle_timeout_s)
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.shutdown()

    app = FastAPI(lifespan=lifespan, title="tinker_nb Training API", version=__version__,
                  description="DP-SGD LoRA fine-tuning as a service: the tinker_nb TrainingClient over HTTP. "
                              "Authenticate with `Authorization: Bearer tml-...` or `X-API-Key`. Errors are "
                              '`{"error": {"type", "message"}}`. See docs/SERVER.md.')
    app.state.tinker = state

    @app.exception_handler(TinkerError)
    async def _tinker_error(request: Request, exc: TinkerError) -> JSONResponse:
        t = error_type(exc)
        return error_response(t, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return error_response("ConfigError", "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response("NotFoundError", f"no such endpoint: {request.method} {request.url.path}.")
        if exc.status_code == 405:
            return error_response("ConfigError", f"method {request.method} is not allowed on {request.url.path}.",
                                  http_status=405)
        code = exc.status_code if exc.status_code < 500 else 400
        return error_response("TinkerError", str(exc.detail), http_status=code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # a bug: no traceback to the caller
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response("TinkerError", "internal server error; the server log has the details.", http_status=500)

    app.include_router(build_router(state))
    from .tinker_compat import mount as _mount_tinker  # the official Tinker SDK under /tinker (optional extra)

    _mount_tinker(app, state)
    app.add_middleware(GuardMiddleware, state=state)
    return app
