"""Server-side state: one ServiceClient per tenant, training clients with their ordered job queues, futures.

Every operation on a training client becomes a *job* on that client's single worker thread, so per
client, operations run in submission order (the order the server received the requests). A job's
result is stored in the futures registry under an id the client polls or long-polls. Jobs call the
same in-process public API a notebook uses (``TrainingClient.forward_backward(...).result()`` ...).

Failures: a :class:`~tinker_nb.errors.TinkerError` fails that job; until the caller has seen it, the
client's later state-changing jobs are skipped with the same error type, and the next submission is
refused with it (the in-kernel futures' rule). Any other exception (a bug, an out-of-memory) ends that
training client only: it is closed, its queue drains with ``StateError``, other clients go on.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, StateError, TinkerError
from ..remote.wire import NotFoundError, ServerBusyError, error_type, to_jsonable

__all__ = ["ClientRunner", "Job", "JobFailure", "ServerState", "open_workspace"]

log = logging.getLogger("tinker_nb.server")

MAX_QUEUE = 256  # queued jobs per training client before 429
MAX_JOBS = 20000  # futures kept in the registry (oldest finished ones are dropped first)
EVENT_BUFFER = 4096


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class JobFailure(Exception):
    """How a failed job is stored: the wire error type and a message (never a traceback)."""

    def __init__(self, type_name: str, message: str, poison: object | None = None) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.poison = poison


@dataclass
class Job:
    future_id: str
    tenant: str
    client_id: str
    op: str
    created: float
    fut: cf.Future = field(default_factory=cf.Future)
    finished: float | None = None

    def view(self, runner: ClientRunner | None = None) -> dict:
        d: dict[str, Any] = {"future_id": self.future_id, "op": self.op, "training_client_id": self.client_id,
                             "created": self.created}
        if not self.fut.done():
            d["status"] = "pending"
            return d
        exc = self.fut.exception()
        if exc is None:
            d["status"] = "done"
            d["result"] = self.fut.result()
        else:
            d["status"] = "failed"
            if isinstance(exc, JobFailure):
                d["error"] = {"type": exc.type_name, "message": exc.message}
                if runner is not None:
                    runner.observed(exc)
            else:  # pragma: no cover - every job stores a JobFailure
                d["error"] = {"type": "TinkerError", "message": "the operation failed."}
        return d


def _is_workspace_object(obj: Any) -> bool:
    return not isinstance(obj, (str, bytes)) and hasattr(obj, "keystore") and callable(getattr(obj, "tenant", None))


def open_workspace(workspace: Any, *, passphrase: str | None = None, key_file: str | os.PathLike | None = None):
    """(path, keystore, service_factory) for a workspace path or a ``tinker_nb.workspace.Workspace`` object.

    A path becomes one shared Workspace object when the core has one, so every tenant's ServiceClient
    shares one keystore, signer and privacy odometer.
    """
    from ..client import ServiceClient

    if not _is_workspace_object(workspace):
        if not isinstance(workspace, (str, os.PathLike)):
            raise ConfigError("create_app(workspace) takes a folder path or a tinker_nb Workspace object.")
        try:
            from ..workspace import Workspace
        except ImportError:  # a core without the Workspace object: one ServiceClient per tenant on the path
            from ..security.keys import Keystore

            path = Path(workspace).resolve()
            keystore = Keystore.open(path, passphrase=passphrase, key_file=key_file)

            def path_factory(tenant: str):
                return ServiceClient(path, tenant=tenant, passphrase=passphrase, key_file=key_file)

            return path, keystore, path_factory
        workspace = Workspace(workspace, passphrase=passphrase, key_file=key_file)
    elif passphrase is not None or key_file is not None:
        raise ConfigError("the Workspace already holds its root key settings; pass passphrase/key_file to it.")
    ws = workspace
    keystore = ws.keystore
    # The privacy odometer is checked against the audit ledger before serving anyone: a missing or emptied
    # privacy.sqlite stops `tinker-nb serve` at once (IntegrityError) instead of resetting every budget.
    _ = getattr(ws, "odometer", None)

    def factory(tenant: str):
        return ServiceClient(ws, tenant=tenant)

    return Path(getattr(ws, "path", ws)), keystore, factory


class EventLog:
    """A client's recent events with increasing ids, fanned out to SSE subscribers (asyncio queues)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf: collections.deque = collections.deque(maxlen=EVENT_BUFFER)
        self._next = 1
        self._subs: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self.closed = False

    def append(self, kind: str, payload: dict) -> None:
        try:
            data = json.dumps(to_jsonable(payload), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            data = "{}"
        with self._lock:
            item = (self._next, kind, data)
            self._next += 1
            self._buf.append(item)
            subs = list(self._subs)
        for loop, q in subs:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # loop closed
                pass

    @property
    def last_id(self) -> int:
        with self._lock:
            return self._next - 1

    def subscribe(self, after: int | None) -> tuple[asyncio.Queue, list]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        with self._lock:
            backlog = [it for it in self._buf if after is not None and it[0] > after]
            self._subs.append((loop, q))
        return q, backlog

    def unsubscribe(self, q: asyncio.Queue) -> None:
        with self._lock:
            self._subs = [(lp, qq) for lp, qq in self._subs if qq is not q]

    def close(self) -> None:
        self.closed = True
        with self._lock:
            subs = list(self._subs)
        for loop, q in subs:
            try:
                loop.call_soon_threadsafe(q.put_nowait, None)
            except RuntimeError:
                pass


class ClientRunner:
    """One remote training client: the in-process TrainingClient, its ordered queue, draws and events."""

    def __init__(self, state: ServerState, client_id: str, tenant: str, tc: Any, config: dict) -> None:
        self.state = state
        self.client_id = client_id
        self.tenant = tenant
        self.tc = tc
        self.config = config
        self.created = time.time()
        self.last_used = time.monotonic()
        self.status = "open"  # open | closed | failed
        self.failure: str | None = None
        self.steps = 0
        self.dataset: dict | None = None
        self._lock = threading.Lock()
        self._queued = 0
        self._poison: JobFailure | None = None
        self._exec = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tinker-srv-{client_id[-6:]}")
        self.draws: dict[str, Any] = {}
        self.used_draws: set[str] = set()
        self.iterators: dict[str, dict] = {}
        self.events = EventLog()
        self._unsub = tc.events.subscribe(self._on_event)

    # ------------------------------------------------------------------ events
    def _on_event(self, kind: str, payload: dict) -> None:
        if kind == "step":
            try:
                self.steps = int(payload.get("step") or self.steps + 1)
            except (TypeError, ValueError):
                self.steps += 1
        self.events.append(kind, payload)

    def info(self) -> dict:
        return {"training_client_id": self.client_id, "tenant": self.tenant, "status": self.status,
                "created": self.created, "steps": self.steps, "queued": self._queued,
                "dataset": self.dataset, "failure": self.failure, "config": self.config,
                "last_event_id": self.events.last_id}

    # ------------------------------------------------------------------ jobs
    def check_open(self) -> None:
        if self.status == "failed":
            raise StateError(f"training client {self.client_id} ended after an internal error ({self.failure}); "
                             "create a new training client and load_state from your last checkpoint.")
        if self.status != "open":
            raise StateError(f"training client {self.client_id} is closed; create a new one.")

    def observed(self, failure: JobFailure) -> None:
        with self._lock:
            if self._poison is not None and failure.poison is self._poison:
                self._poison = None

    def submit(self, op: str, fn: Callable[[], Any], *, ordered_state_change: bool = True,
               on_done: Callable[[], None] | None = None) -> Job:
        """Queue ``fn`` behind this client's earlier jobs; returns the job (its future id)."""
        self.last_used = time.monotonic()
        with self._lock:
            self.check_open()
            if ordered_state_change and self._poison is not None:
                p, self._poison = self._poison, None
                from ..remote.wire import make_error

                raise make_error(p.type_name, p.message)
            if self._queued >= MAX_QUEUE:
                raise ServerBusyError(f"training client {self.client_id} has {self._queued} operations queued; "
                                      "wait for some futures and retry.")
            self._queued += 1
        job = self.state.jobs.new(self.tenant, self.client_id, op)

        def run() -> None:
            try:
                if self.status == "failed":
                    raise JobFailure("StateError", f"{op} was not run: training client {self.client_id} ended after "
                                     f"an internal error ({self.failure}).")
                p = self._poison
                if ordered_state_change and p is not None:
                    raise JobFailure(p.type_name, f"{op} was skipped because an earlier operation failed "
                                     f"({p.type_name}: {p.message}); nothing was changed.", poison=p)
                value = to_jsonable(fn())
                job.fut.set_result(value)
            except JobFailure as failed:
                job.fut.set_exception(failed)
            except TinkerError as exc:
                f = JobFailure(error_type(exc), str(exc))
                f.poison = f
                if ordered_state_change:
                    with self._lock:
                        if self._poison is None:
                            self._poison = f
                job.fut.set_exception(f)
            except BaseException as exc:  # ends this client only
                log.exception("training client %s: %s failed with an internal error", self.client_id, op)
                self._fail(f"{type(exc).__name__} in {op}")
                job.fut.set_exception(JobFailure(
                    "StateError", f"{op} failed with an internal error ({type(exc).__name__}); training client "
                    f"{self.client_id} was closed. Create a new one and load_state from your last checkpoint."))
            finally:
                job.finished = time.time()
                with self._lock:
                    self._queued -= 1
                if on_done is not None:
                    try:
                        on_done()
                    except Exception:
                        log.exception("on_done hook failed")

        try:
            self._exec.submit(run)
        except RuntimeError:  # executor shut down in between
            with self._lock:
                self._queued -= 1
            job.fut.set_exception(JobFailure("StateError", f"training client {self.client_id} is closed."))
        return job

    def _fail(self, why: str) -> None:
        if self.status not in ("open", "closing"):
            return
        self.status = "failed"
        self.failure = why
        self._release()
        try:
            self.tc.close()
        except BaseException:  # it is being discarded anyway
            log.exception("closing failed training client %s", self.client_id)
        self.events.append("close", {"status": "failed", "reason": why})
        self.events.close()
        self.tc = None
        self.draws.clear()
        self.iterators.clear()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            try:  # give the failed client's cached blocks back (an OOM must not starve the others)
                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass

    def _release(self) -> None:
        try:
            self._unsub()
        except Exception:  # noqa: BLE001
            pass
        self.state.release_slot(self)

    def close_job(self) -> Job:
        """Queue close (finishes queued work first); the client answers StateError afterwards."""
        def run():
            tc = self.tc
            try:
                if tc is not None:
                    tc.close()
            finally:
                if self.status in ("open", "closing"):
                    self.status = "closed"
                    self._release()
                self.events.append("close", {"status": "closed", "steps": self.steps})
                self.events.close()
                self.tc = None
                self.draws.clear()
                self.iterators.clear()
            return {"training_client_id": self.client_id, "status": "closed", "steps": self.steps}

        job = self.submit("close", run, ordered_state_change=False)
        with self._lock:
            self.status = "closing" if self.status == "open" else self.status
        self._exec.shutdown(wait=False)
        return job

    def shutdown(self) -> None:
        """Server stop: drop queued jobs, let the running one finish, close the in-process client."""
        self._exec.shutdown(wait=False, cancel_futures=True)
        if self.status in ("open", "closing") and self.tc is not None:
            tc = self.tc
            self.status = "closed"
            try:
                tc.close()
            except Exception:  # stopping anyway
                log.exception("closing training client %s at shutdown", self.client_id)
            self._release()
            self.tc = None
        self.events.close()

    # ------------------------------------------------------------------ draws
    def register_draw(self, handle: Any) -> str:
        draw_id = getattr(handle, "draw_id", None)
        if not isinstance(draw_id, str) or not draw_id or draw_id in self.draws or draw_id in self.used_draws:
            draw_id = _new_id("draw")
        self.draws[draw_id] = handle
        return draw_id

    # Lazy draw ids "ITERATOR:K" name the K-th draw of a server-side iterator before it is made: the
    # Python client yields them without a request, and the draw is taken in step order on the worker
    # (the in-kernel handles are likewise sampled when the engine trains on them).
    @staticmethod
    def lazy_ref(draw_id: str) -> tuple[str, int] | None:
        iid, sep, k = draw_id.rpartition(":")
        if not sep or not iid.startswith("it_") or not k.isdigit():
            return None
        return iid, int(k)

    def claim_lazy(self, draw_id: str, iid: str, k: int) -> None:
        """Reserve a lazy draw at submission: unknown or out-of-range ids 404, a second use 422."""
        with self._lock:
            if draw_id in self.used_draws:
                raise DataError(f"draw {draw_id} was already used by a forward_backward; a draw is trained on "
                                "exactly once. Take the next one from poisson_batches().")
            st = self.iterators.get(iid)
            if draw_id not in self.draws:
                if st is None:
                    raise NotFoundError(f"no draw {draw_id!r}: iterator {iid} is unknown or exhausted.")
                if k < 1 or (st["total"] is not None and k > st["total"]) or k <= st["taken"]:
                    raise NotFoundError(f"no draw {draw_id!r} in iterator {iid}.")
            self.used_draws.add(draw_id)

    def materialize(self, draw_id: str, iid: str, k: int) -> Any:
        """The K-th draw of the iterator (taking the ones before it first, in order). On the worker thread."""
        handle = self.draws.pop(draw_id, None)
        if handle is not None:
            return handle
        st = self.iterators.get(iid)
        if st is None:
            raise StateError(f"draw iterator {iid} is gone (a new poisson_batches() replaced it, or it ended).")
        with st["lock"]:
            while st["taken"] < k:
                try:
                    h = next(st["it"])
                except StopIteration:
                    self.iterators.pop(iid, None)
                    raise DataError(f"iterator {iid} has no draw {k}.") from None
                st["taken"] += 1
                self.draws[f"{iid}:{st['taken']}"] = h
        handle = self.draws.pop(draw_id, None)
        if handle is None:
            raise NotFoundError(f"draw {draw_id} was taken with .../next; use the draw_id it answered.")
        return handle

    def take_draw(self, draw_id: str) -> Any:
        """The draw's handle, once: a second use is refused (a draw is trained on exactly once)."""
        with self._lock:
            if draw_id in self.used_draws:
                raise DataError(f"draw {draw_id} was already used by a forward_backward; a draw is trained on "
                                "exactly once. Take the next one from poisson_batches().")
            handle = self.draws.pop(draw_id, None)
            if handle is None:
                raise NotFoundError(f"no draw {draw_id!r} for training client {self.client_id}.")
            self.used_draws.add(draw_id)
        return handle


class JobRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()

    def new(self, tenant: str, client_id: str, op: str) -> Job:
        job = Job(_new_id("fut"), tenant, client_id, op, time.time())
        with self._lock:
            self._jobs[job.future_id] = job
            if len(self._jobs) > MAX_JOBS:
                for fid in [f for f, j in self._jobs.items() if j.fut.done()][: len(self._jobs) - MAX_JOBS]:
                    del self._jobs[fid]
        return job

    def get(self, tenant: str, future_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(future_id)
        if job is None or job.tenant != tenant:
            raise NotFoundError(f"no future {future_id!r}; futures are kept for the server's lifetime (bounded).")
        return job


class ServerState:
    """Everything the app holds: the workspace, tenants' ServiceClients, training clients, futures, packages."""

    def __init__(self, workspace: Any, *, max_clients: int = 16, allow_models: list[str] | None = None,
                 passphrase: str | None = None, key_file: str | os.PathLike | None = None,
                 max_body_bytes: int = 64 * 1024 * 1024, idle_timeout_s: float = 3600.0) -> None:
        from .apikeys import ApiKeyStore

        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ConfigError(f"max_clients must be a positive integer, got {max_clients!r}.")
        self.path, self.keystore, self._factory = open_workspace(workspace, passphrase=passphrase, key_file=key_file)
        self.apikeys = ApiKeyStore.for_keystore(self.path, self.keystore)
        self.max_clients = max_clients
        self.max_body_bytes = int(max_body_bytes)
        self.idle_timeout_s = float(idle_timeout_s)
        from ..config import DEFAULT_MODEL_REF

        self.allow_models = list(allow_models) if allow_models else [DEFAULT_MODEL_REF]
        self.jobs = JobRegistry()
        self._lock = threading.RLock()
        self._services: dict[str, Any] = {}
        self._service_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self.clients: dict[str, ClientRunner] = {}
        self._open = 0
        self._reserved = 0
        self.packages: dict[str, tuple[str, Path]] = {}
        self.downloads: dict[str, tuple[str, bytes]] = {}  # adapter weights, in memory until downloaded once
        self.started = time.time()
        # Model loading is not thread-safe in transformers (it patches tensor constructors while it builds
        # a model) and is the memory peak: training clients are created one at a time.
        self.create_lock = threading.Lock()

    # ------------------------------------------------------------------ tenants
    def service(self, tenant: str):
        with self._lock:
            svc = self._services.get(tenant)
        if svc is not None:
            return svc
        with self._service_locks[tenant]:
            with self._lock:
                svc = self._services.get(tenant)
            if svc is None:
                svc = self._factory(tenant)
                _ = svc.keystore  # create the tenant's KEK now, not inside a training step
                if hasattr(svc, "collect_garbage"):  # reconcile what a crash (kill -9) may have left half-done
                    try:
                        log.info("tenant %s: %s", tenant, svc.collect_garbage())
                    except Exception:  # serving goes on; the operator sees the log
                        log.exception("tenant %s: reconciling the artifact store failed", tenant)
                with self._lock:
                    self._services[tenant] = svc
        return svc

    # ------------------------------------------------------------------ admission
    def reserve_slot(self) -> None:
        with self._lock:
            if self._open + self._reserved >= self.max_clients:
                self._reap_idle()
            if self._open + self._reserved >= self.max_clients:
                raise ServerBusyError(f"the server is at capacity ({self.max_clients} open training clients); "
                                      "retry later or close a client.")
            self._reserved += 1

    def unreserve(self, *, opened: bool) -> None:
        with self._lock:
            self._reserved -= 1
            if opened:
                self._open += 1

    def release_slot(self, runner: ClientRunner) -> None:
        with self._lock:
            if getattr(runner, "_slot_released", False):
                return
            runner._slot_released = True  # type: ignore[attr-defined]
            self._open -= 1

    def _reap_idle(self) -> None:
        now = time.monotonic()
        for r in list(self.clients.values()):
            if r.status == "open" and r._queued == 0 and now - r.last_used > self.idle_timeout_s:
                log.info("closing idle training client %s (tenant %s)", r.client_id, r.tenant)
                r.close_job()

    def open_clients(self) -> int:
        with self._lock:
            return self._open

    def runner(self, tenant: str, client_id: str) -> ClientRunner:
        r = self.clients.get(client_id)
        if r is None or r.tenant != tenant:
            raise NotFoundError(f"no training client {client_id!r}.")
        return r

    def shutdown(self) -> None:
        for r in list(self.clients.values()):
            r.shutdown()
        try:
            self.apikeys.close()
        except Exception:  # noqa: BLE001
            pass
