"""State behind the Tinker routes: sessions, models, samplers and futures, per tenant.

* A *model* (``<session_id>:train:<n>``, the 0.38 naming contract) is one in-process
  :class:`tinker_nb.client.TrainingClient` of the tenant's ServiceClient, created with the tenant's DP policy
  (:mod:`.policy`). Its operations run on one worker thread per model, in arrival order (the SDK sends a
  model's requests one at a time, in ``seq_id`` order).
* Every training POST is idempotent on ``(model_id, seq_id)`` (creation on ``(session_id, model_seq_id)``,
  sampling on ``(sampling_session_id, seq_id)``): a retried POST with the same body gets the first
  ``request_id`` back and runs nothing; the same key with a different body gets a failed future.
* A future's result is JSON (a dict) or protobuf bytes; a failure carries a Tinker error category
  (``user`` for anything the caller can fix, a refused privacy budget included; ``server`` for bugs).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import BudgetExceededError, ConfigError, DataError, StateError, TinkerError
from ...remote.wire import NotFoundError

__all__ = ["CompatModel", "Sampler", "TinkerCompat", "TinkerFailure"]

log = logging.getLogger("tinker_nb.server.tinker")

MAX_FUTURES = 20_000
MAX_IDEM = 50_000
MAX_LOADED_SAMPLERS = 2  # per session: older sampling sessions give their model copy back (reloaded on use)
SESSION_EXPIRY_S = 300.0  # a session without a heartbeat this long (the SDK beats every 10 s) is finished


class TinkerFailure(Exception):
    """A failed Tinker future: ``message`` and ``category`` ("user" | "server")."""

    def __init__(self, message: str, category: str = "user") -> None:
        super().__init__(message)
        self.message = message
        self.category = category


def failure_of(exc: BaseException, op: str) -> TinkerFailure:
    if isinstance(exc, TinkerFailure):
        return exc
    if isinstance(exc, BudgetExceededError):
        return TinkerFailure(f"privacy budget exhausted: {exc} The tenant's DP policy refuses this step; nothing "
                             "was trained or charged.", "user")
    if isinstance(exc, TinkerError):
        return TinkerFailure(f"{op}: {type(exc).__name__}: {exc}", "user")
    log.error("tinker %s failed with an internal error", op, exc_info=exc)
    return TinkerFailure(f"{op} failed with an internal error ({type(exc).__name__}); the server log has the "
                         "details.", "server")


@dataclass
class FutureEntry:
    request_id: str
    tenant: str
    op: str
    fut: cf.Future = field(default_factory=cf.Future)
    created: float = field(default_factory=time.time)


@dataclass
class Session:
    session_id: str
    tenant: str
    created: float
    last_heartbeat: float
    models: list[str] = field(default_factory=list)
    samplers: list[str] = field(default_factory=list)
    finished: bool = False


class _Worker:
    """One thread that runs a model's (or sampler's) jobs in submission order."""

    def __init__(self, name: str) -> None:
        self._exec = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, entry: FutureEntry, fn: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                entry.fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - stored in the future, never raised here
                entry.fut.set_exception(failure_of(exc, entry.op))

        try:
            self._exec.submit(run)
        except RuntimeError:  # shut down in between
            entry.fut.set_exception(TinkerFailure(f"{entry.op}: the model is closed.", "user"))

    def shutdown(self, *, cancel: bool = False) -> None:
        self._exec.shutdown(wait=False, cancel_futures=cancel)


@dataclass
class CompatModel:
    model_id: str
    tenant: str
    session_id: str
    base_model: str
    rank: int
    config: Any  # TrainingConfig
    policy: Any  # DPPolicy
    worker: _Worker
    tc: Any = None  # the in-process TrainingClient, once created
    closed: bool = False


@dataclass
class Sampler:
    sampler_id: str
    tenant: str
    session_id: str
    base_model: str
    model_path: str | None
    artifact_id: str | None
    config: Any
    worker: _Worker
    tc: Any = None
    closed: bool = False
    last_used: float = 0.0


class TinkerCompat:
    """Everything the Tinker routes hold, over the app's :class:`~tinker_nb.server.runtime.ServerState`."""

    def __init__(self, state: Any, *, poll_timeout_s: float = 30.0) -> None:
        self.state = state
        self.poll_timeout_s = float(poll_timeout_s)
        self._lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        self.models: dict[str, CompatModel] = {}
        self.samplers: dict[str, Sampler] = {}
        self.futures: dict[str, FutureEntry] = {}
        self._idem: dict[tuple, tuple[str, str]] = {}

    # ------------------------------------------------------------------ futures and idempotency
    def _new_future(self, tenant: str, op: str) -> FutureEntry:
        e = FutureEntry(f"req_{secrets.token_hex(12)}", tenant, op)
        with self._lock:
            self.futures[e.request_id] = e
            if len(self.futures) > MAX_FUTURES:
                done = [k for k, v in self.futures.items() if v.fut.done()][: len(self.futures) - MAX_FUTURES]
                for k in done:
                    del self.futures[k]
        return e

    def failed(self, tenant: str, op: str, failure: TinkerFailure) -> FutureEntry:
        e = self._new_future(tenant, op)
        e.fut.set_exception(failure)
        return e

    def idempotent(self, tenant: str, key: tuple, body: bytes, op: str,
                   start: Callable[[FutureEntry], None]) -> FutureEntry:
        """The future for ``key``: the first one when retried with the same body, else a new one (started)."""
        fp = hashlib.sha256(body).hexdigest()
        k = (tenant, *key)
        with self._lock:
            prev = self._idem.get(k)
            if prev is not None:
                rid, pfp = prev
                e = self.futures.get(rid)
                if pfp == fp and e is not None:
                    return e
                if pfp != fp:
                    return self.failed(tenant, op, TinkerFailure(
                        f"{op}: {key[1]!r} seq_id {key[2]!r} was already used for a different request; each "
                        "request of a model needs its own seq_id.", "user"))
            e = self._new_future(tenant, op)
            self._idem[k] = (e.request_id, fp)
            if len(self._idem) > MAX_IDEM:
                for old in list(self._idem)[: len(self._idem) - MAX_IDEM]:
                    del self._idem[old]
        start(e)
        return e

    def future(self, tenant: str, request_id: str) -> FutureEntry:
        with self._lock:
            e = self.futures.get(request_id)
        if e is None or e.tenant != tenant:
            raise NotFoundError(f"no future {request_id!r}.")
        return e

    # ------------------------------------------------------------------ sessions
    def reap(self) -> None:
        """Finish sessions whose client went away without ``close()`` (no heartbeat for SESSION_EXPIRY_S)."""
        now = time.time()
        for s in list(self.sessions.values()):
            if not s.finished and now - s.last_heartbeat > SESSION_EXPIRY_S:
                log.info("tinker session %s (tenant %s) expired without heartbeat", s.session_id, s.tenant)
                try:
                    self.finish_session(s.tenant, s.session_id, "expired")
                except Exception:
                    log.exception("finishing expired session %s", s.session_id)

    def create_session(self, tenant: str) -> Session:
        self.reap()
        now = time.time()
        s = Session(f"tnb-{secrets.token_hex(8)}", tenant, now, now)
        with self._lock:
            self.sessions[s.session_id] = s
        self.audit(tenant, "tinker_create_session", {"session_id": s.session_id}, {"session_id": s.session_id})
        return s

    def session(self, tenant: str, session_id: str) -> Session:
        s = self.sessions.get(session_id)
        if s is None or s.tenant != tenant:
            raise NotFoundError(f"no session {session_id!r}.")
        if s.finished:  # 404, not 409: the SDK retries a 409 for minutes
            raise NotFoundError(f"session {session_id} is finished; create a new ServiceClient.")
        return s

    def finish_session(self, tenant: str, session_id: str, reason: str) -> None:
        s = self.sessions.get(session_id)
        if s is None or s.tenant != tenant:
            raise NotFoundError(f"no session {session_id!r}.")
        if s.finished:
            return
        s.finished = True
        for mid in list(s.models):
            m = self.models.get(mid)
            if m is not None:
                self._close(m)
        for sid in list(s.samplers):
            sp = self.samplers.get(sid)
            if sp is not None:
                self._close(sp)
        self.audit(tenant, "tinker_finish_session", {"session_id": session_id},
                   {"session_id": session_id, "reason": reason, "models": len(s.models)})

    # ------------------------------------------------------------------ models
    def live_count(self) -> int:
        with self._lock:
            return sum(1 for m in self.models.values() if not m.closed) + \
                sum(1 for s in self.samplers.values() if not s.closed and s.tc is not None)

    def check_capacity(self) -> None:
        if self.live_count() >= self.state.max_clients:
            self.reap()
        if self.live_count() >= self.state.max_clients:
            raise StateError(f"the server is at capacity ({self.state.max_clients} models and samplers); close a "
                             "ServiceClient (its models are released) and retry.")

    def model(self, tenant: str, model_id: str) -> CompatModel:
        m = self.models.get(model_id)
        if m is None or m.tenant != tenant:
            raise NotFoundError(f"no model {model_id!r}.")
        if m.closed:
            raise NotFoundError(f"model {model_id} is closed (its session finished or its creation failed); create "
                                "a new training client.")
        return m

    def register_model(self, m: CompatModel) -> None:
        with self._lock:
            if m.model_id in self.models and not self.models[m.model_id].closed:
                raise StateError(f"model {m.model_id} already exists.")
            self.models[m.model_id] = m
            s = self.sessions.get(m.session_id)
            if s is not None:
                s.models.append(m.model_id)

    def open_training_client(self, tenant: str, config: Any) -> Any:
        svc = self.state.service(tenant)
        with self.state.create_lock:  # transformers model loading is not thread-safe
            return svc.create_training_client(config)

    @staticmethod
    def _close(holder: CompatModel | Sampler) -> None:
        """Close a model's or sampler's client on its own worker (after its queued work), then stop the worker."""
        if holder.closed:
            return
        holder.closed = True

        def close() -> None:
            if holder.tc is not None:
                try:
                    holder.tc.close()
                finally:
                    holder.tc = None

        holder.worker.submit(FutureEntry("close", holder.tenant, "close"), close)
        holder.worker.shutdown()

    def sampler_client(self, sp: Sampler) -> Any:
        """The sampler's in-process client (on its worker): loaded on first use, and again after an unload.

        At most MAX_LOADED_SAMPLERS per session hold a model copy; the least recently used one is unloaded.
        """
        sp.last_used = time.monotonic()
        if sp.tc is not None:
            return sp.tc
        with self._lock:
            loaded = [x for x in self.samplers.values() if x.session_id == sp.session_id and x is not sp
                      and not x.closed and x.tc is not None]
        # Unloads are queued on the victims' workers and not waited for: a victim may itself be loading and
        # unloading this sampler (two workers waiting on each other would deadlock).
        while len(loaded) >= MAX_LOADED_SAMPLERS:
            victim = min(loaded, key=lambda x: x.last_used)
            loaded.remove(victim)
            e = FutureEntry("unload", victim.tenant, "unload")

            def unload(v: Sampler = victim) -> None:
                if v.tc is not None:
                    try:
                        v.tc.close()
                    finally:
                        v.tc = None

            victim.worker.submit(e, unload)
        self.check_capacity()
        tc = self.open_training_client(sp.tenant, sp.config)
        try:
            if sp.artifact_id is not None:
                tc.load_state(sp.artifact_id)
        except BaseException:
            tc.close()
            raise
        sp.tc = tc
        return tc

    def register_sampler(self, sp: Sampler) -> None:
        with self._lock:
            self.samplers[sp.sampler_id] = sp
            s = self.sessions.get(sp.session_id)
            if s is not None:
                s.samplers.append(sp.sampler_id)

    def sampler(self, tenant: str, sampler_id: str) -> Sampler:
        sp = self.samplers.get(sampler_id)
        if sp is None or sp.tenant != tenant:
            raise NotFoundError(f"no sampling session {sampler_id!r}.")
        if sp.closed:
            raise NotFoundError(f"sampling session {sampler_id} is closed.")
        return sp

    # ------------------------------------------------------------------ checkpoints
    def find_checkpoint(self, tenant: str, path: str) -> str:
        """The artifact id of the tenant's newest checkpoint saved under the Tinker path ``path``."""
        if not isinstance(path, str) or not path.startswith("tinker://"):
            raise DataError(f"checkpoint paths are tinker:// URIs returned by save_state/save_weights_for_sampler, "
                            f"got {path!r}.")
        arts = [a for a in self.state.service(tenant).store.list() if getattr(a, "name", None) == path]
        if not arts:
            raise NotFoundError(f"no checkpoint {path!r} for this API key's tenant.")
        return max(arts, key=lambda a: a.created).artifact_id

    def checkpoint_config(self, tenant: str, artifact_id: str) -> Any:
        """The TrainingConfig a checkpoint was saved with (decrypted and checked by the store)."""
        from ...config import TrainingConfig
        from ...engine.checkpoint import read_state

        blobs, _meta, _info = self.state.service(tenant).store.load(artifact_id)
        return TrainingConfig.from_dict(read_state(blobs)["config"])

    # ------------------------------------------------------------------ audit
    def audit(self, tenant: str, op: str, params: dict, summary: dict) -> None:
        """An entry in the tenant's ledger for the Tinker-level facts the core does not log itself."""
        self.state.service(tenant).audit(op, params, summary)

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self) -> None:
        for m in list(self.models.values()):
            m.closed = True
            m.worker.shutdown(cancel=True)
            if m.tc is not None:
                try:
                    m.tc.close()
                except Exception:
                    log.exception("closing tinker model %s at shutdown", m.model_id)
                m.tc = None
        for sp in list(self.samplers.values()):
            sp.closed = True
            sp.worker.shutdown(cancel=True)
            if sp.tc is not None:
                try:
                    sp.tc.close()
                except Exception:  # noqa: BLE001
                    pass
                sp.tc = None


def new_worker(name: str) -> _Worker:
    return _Worker(f"tinker-{name[-12:]}")


def check_rank(rank: Any) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 512:
        raise ConfigError(f"LoRA rank must be an integer in 1..512, got {rank!r}.")
    return rank
