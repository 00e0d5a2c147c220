"""``RemoteServiceClient`` / ``RemoteTrainingClient``: the in-kernel API, served by `tinker-nb serve`.

Same methods, same futures, same ``TinkerError`` subclasses as in-kernel; the differences are stated
where they are (docs/SERVER.md): the private records are uploaded once and stay on the server, the
client holds opaque draw ids; a ``signer`` for ``package`` and a fixed ``noise_seed`` are refused.

Every POST carries a fresh ``Idempotency-Key`` that its retries reuse (a lost response never applies
a step twice). Submissions of one training client are sent one at a time, in call order, so the
server runs them in that order.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..client import SaveResult, ServiceClient, TrainingClient
from ..config import TrainingConfig
from ..errors import ConfigError, StateError, TinkerError
from ..events import EventBus
from ..futures import TinkerFuture

if TYPE_CHECKING:
    from ..ledger.log import VerifyReport

from .wire import API_PREFIX, IDEMPOTENCY_HEADER, WireObject, from_wire, make_error, to_jsonable

__all__ = [
    "RemoteAuditLog",
    "RemoteDraw",
    "RemoteFuture",
    "RemoteServiceClient",
    "RemoteTrainingClient",
    "ServerUnavailableError",
]

BASE_URL_ENV = "TINKER_NB_BASE_URL"
API_KEY_ENV = "TINKER_NB_API_KEY"
LONG_POLL_S = 30.0


class ServerUnavailableError(StateError, ConnectionError):
    """The server could not be reached (after retries); nothing is known to have been applied twice."""


class _Http:
    """httpx with the API key, retries (same Idempotency-Key) and JSON errors → TinkerError subclasses."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float, retries: int, busy_timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.busy_timeout = busy_timeout
        self.client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0),
                                   headers={"Authorization": f"Bearer {api_key}",
                                            "User-Agent": "tinker-nb-remote/1"})

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                busy_timeout: float | None = None, raw: bool = False, wait_for_queue: bool = False) -> Any:
        """One API call. ``wait_for_queue``: the answer comes after the client's queued work (no read timeout)."""
        headers = {IDEMPOTENCY_HEADER: uuid.uuid4().hex} if method == "POST" else {}
        busy_deadline = time.monotonic() + (self.busy_timeout if busy_timeout is None else busy_timeout)
        attempt = 0
        while True:
            try:
                kw: dict[str, Any] = {"timeout": httpx.Timeout(None, connect=10.0)} if wait_for_queue else {}
                r = self.client.request(method, API_PREFIX + path if not path.startswith("/healthz") else path,
                                        json=json_body, params=params, headers=headers, **kw)
            except httpx.TransportError as exc:
                attempt += 1
                if attempt > self.retries:
                    raise ServerUnavailableError(
                        f"the server at {self.base_url} did not answer {method} {path} ({type(exc).__name__}); "
                        "the request may be retried safely.") from None
                time.sleep(min(0.2 * 2 ** attempt, 5.0) * (0.5 + random.random()))
                continue
            if r.status_code == 429:
                try:
                    wait = float(r.headers.get("Retry-After", "1"))
                except ValueError:
                    wait = 1.0
                if time.monotonic() + wait <= busy_deadline:
                    time.sleep(wait)
                    continue
            break
        if raw and r.status_code < 400:
            return r
        return self.decode(r)

    @staticmethod
    def decode(r: httpx.Response) -> Any:
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict) and isinstance(err.get("type"), str):
                raise make_error(err["type"], str(err.get("message", "")))
            raise TinkerError(f"the server answered HTTP {r.status_code} without an error body.")
        return body


class RemoteFuture(TinkerFuture):
    """A future held by the server; ``result()`` long-polls ``GET /api/v1/futures/{id}``."""

    def __init__(self, http: _Http, view: dict, op: str) -> None:  # no worker here
        self._http = http
        self.op = op
        self.future_id = view.get("future_id", "")
        self._view = view

    def _refresh(self, wait: float) -> dict:
        if self._view.get("status") == "pending":
            self._view = self._http.request("GET", f"/futures/{self.future_id}", params={"wait": wait})
        return self._view

    def result(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = LONG_POLL_S if deadline is None else max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
            v = self._refresh(left)
            if v.get("status") != "pending":
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.op} is still running on the server (future {self.future_id}).")
        if v["status"] == "failed":
            err = v.get("error") or {}
            raise make_error(err.get("type", "TinkerError"), err.get("message", ""))
        return from_wire(v.get("result"))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except TinkerError as exc:
            return exc
        return None

    def done(self) -> bool:
        return self._refresh(0.0).get("status") != "pending"

    def __repr__(self) -> str:
        return f"RemoteFuture({self.op}, {self._view.get('status', 'pending')}, id={self.future_id})"


def _normalise(records: Any) -> list:
    """Records as the in-kernel attach_dataset takes them (lists, pandas, a file path, HF datasets) → JSON list."""
    normalize: Callable[[Any], list[Any]] | None
    try:
        from ..records import normalize_records

        normalize = normalize_records
    except ImportError:  # an older core: plain lists only
        normalize = None
    if normalize is not None:
        return to_jsonable(normalize(records))
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
        from ..errors import DataError

        raise DataError("attach_dataset expects a non-empty list of strings or of dicts with input_ids.")
    return to_jsonable(list(records))


def _answer(http: _Http, view: dict, op: str) -> Any:
    """The value of a POST answered with ``?wait=``: keep long-polling until it is done."""
    return RemoteFuture(http, view, op).result()


class RemoteDraw:
    """An opaque Poisson draw made on the server: only its id travels; the records never leave."""

    __slots__ = ("client_id", "draw_id", "index")

    def __init__(self, draw_id: str, index: int, client_id: str) -> None:
        self.draw_id = draw_id
        self.index = index
        self.client_id = client_id

    def __repr__(self) -> str:
        return f"RemoteDraw(draw_id={self.draw_id!r}, index={self.index})"


class _RemoteEvents(EventBus):
    """The client's EventBus, fed by the server's SSE stream once someone subscribes."""

    def __init__(self, tc: RemoteTrainingClient) -> None:
        super().__init__()
        self._tc = tc
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.cursor: int | None = None  # last event id already reflected in a fetched history

    def subscribe(self, handler, *, kind: str | None = None):
        unsub = super().subscribe(handler, kind=kind)
        self.start()
        return unsub

    def start(self) -> None:
        if self._thread is None and not self._tc.closed:
            self._thread = threading.Thread(target=self._run, name=f"tinker-nb-sse-{self._tc.id[-6:]}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        http = self._tc._http
        after = self.cursor
        backoff = 0.2
        with httpx.Client(base_url=http.base_url, headers=dict(http.client.headers),
                          timeout=httpx.Timeout(60.0, connect=10.0)) as c:
            while not self._stop.is_set():
                params = {"after": after} if after is not None else {"after": 0}
                try:
                    with c.stream("GET", f"{API_PREFIX}/training_clients/{self._tc.id}/events", params=params) as r:
                        if r.status_code != 200:
                            return
                        backoff = 0.2
                        data: list[str]
                        eid, kind, data = None, None, []
                        for line in r.iter_lines():
                            if self._stop.is_set():
                                return
                            if line == "":
                                if kind == "end":
                                    return
                                if kind is not None:
                                    try:
                                        payload = json.loads("\n".join(data)) if data else {}
                                    except ValueError:
                                        payload = {}
                                    if eid is not None:
                                        after = eid
                                    self.publish(kind, from_wire(payload, cls=dict))
                                eid, kind, data = None, None, []
                            elif line.startswith("id:"):
                                try:
                                    eid = int(line[3:].strip())
                                except ValueError:
                                    eid = None
                            elif line.startswith("event:"):
                                kind = line[6:].strip()
                            elif line.startswith("data:"):
                                data.append(line[5:].lstrip())
                except httpx.HTTPError:
                    pass
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)


class _RemoteSession:
    """What the notebook layer reads from ``tc.session`` (history and step count), fetched on demand."""

    def __init__(self, tc: RemoteTrainingClient) -> None:
        self._tc = tc

    @property
    def metrics_history(self) -> list[dict]:
        d = self._tc._http.request("GET", f"/training_clients/{self._tc.id}/metrics_history", wait_for_queue=True)
        if self._tc.events._thread is None:
            self._tc.events.cursor = int(d.get("last_event_id") or 0)
        return [from_wire(x, cls=dict) for x in d.get("history", [])]

    @property
    def steps(self) -> int:
        return int(self._tc.info().get("steps", 0))

    def __repr__(self) -> str:
        return f"RemoteSession(training_client_id={self._tc.id!r})"


class RemoteAuditLog:
    """The tenant's audit ledger on the server: entries, proofs, signed checkpoints, verification.

    ``verify()`` asks the server; ``verify_locally(public_key)`` downloads every entry and checkpoint and
    recomputes the hash chain, the Merkle roots and the checkpoint signatures here, trusting only the key
    you pin (for instance one you saved from ``service.publisher_key()`` earlier).
    """

    def __init__(self, http: _Http, tenant: str) -> None:
        self._http = http
        self.tenant = tenant
        self.last_verification: VerifyReport | None = None

    def __repr__(self) -> str:
        return f"RemoteAuditLog(tenant={self.tenant!r}, server={self._http.base_url!r})"

    def size(self) -> int:
        return int(self._http.request("GET", "/audit/state")["entries"])

    def head_info(self) -> tuple[int, str]:
        d = self._http.request("GET", "/audit/state")
        return int(d["entries"]), d["head_hash"]

    def head(self) -> str:
        return self.head_info()[1]

    def entries(self, start: int = 0, stop: int | None = None) -> list:
        from ..ledger.log import Entry

        out: list[Entry] = []
        pos = start
        while stop is None or pos < stop:
            limit = 10_000 if stop is None else min(10_000, stop - pos)
            d = self._http.request("GET", "/audit/entries", params={"start": pos, "limit": limit})
            batch = d.get("entries", [])
            out.extend(Entry(**{k: e[k] for k in ("seq", "ts", "tenant", "operation", "params_digest", "summary",
                                                   "prev_hash", "record_hash")}) for e in batch)
            pos += len(batch)
            if not batch or pos >= int(d.get("size", pos)):
                break
        return out

    def tail(self, n: int = 10) -> list:
        size = self.size()
        return self.entries(max(0, size - n), size)

    def checkpoints(self) -> list:
        from ..ledger.log import SignedCheckpoint

        return [SignedCheckpoint(**c) for c in self._http.request("GET", "/audit/checkpoints")]

    def checkpoint(self):
        from ..ledger.log import SignedCheckpoint

        return SignedCheckpoint(**self._http.request("POST", "/audit/checkpoint"))

    def inclusion_proof(self, seq: int, **_: Any) -> dict:
        return self._http.request("GET", f"/audit/proof/{int(seq)}")

    def verify(self, **_: Any):
        from ..ledger.log import VerifyReport

        d = self._http.request("POST", "/audit/verify")
        names = set(VerifyReport.__dataclass_fields__)
        rep = VerifyReport(**{k: v for k, v in d.items() if k in names})
        self.last_verification = rep
        return rep

    def verify_locally(self, public_key: Any = None):
        """Recompute the chain, the Merkle roots and the checkpoint signatures on this machine."""
        import base64
        import hashlib

        from ..ledger import merkle
        from ..ledger.log import CHECKPOINT_CONTEXT, GENESIS, VerifyReport, checkpoint_message, record_hash
        from ..security.signing import load_public_key

        key = load_public_key(public_key if public_key is not None else
                              self._http.request("GET", "/publisher_key"))
        entries, cps = self.entries(), self.checkpoints()

        def report(ok, n, ncp, bad, reason, root=None):
            rep = VerifyReport(ok, n, ncp, bad, reason, root)
            self.last_verification = rep
            return rep

        wanted = {c.size for c in cps}
        roots: dict[int, bytes] = {0: merkle.root([])} if 0 in wanted else {}
        tree, prev = merkle.Frontier(), GENESIS
        for i, e in enumerate(entries):
            if e.seq != i:
                return report(False, i, 0, i, f"sequence break at entry {i}.")
            if e.prev_hash != prev:
                return report(False, i, 0, e.seq, f"entry {e.seq}: chain broken.")
            if record_hash(e.body()) != e.record_hash:
                return report(False, i, 0, e.seq, f"entry {e.seq}: record hash does not match its contents.")
            prev = e.record_hash
            tree.push(hashlib.sha256(b"\x00" + bytes.fromhex(e.record_hash)).digest())
            if tree.size in wanted:
                roots[tree.size] = tree.root()
        for j, cp in enumerate(cps):
            if cp.key_id != key.key_id:
                return report(False, len(entries), j, None, f"checkpoint {j} was signed by an untrusted key.")
            try:
                key.verify(checkpoint_message(cp.tenant, cp.size, cp.root_hash, cp.timestamp),
                           base64.b64decode(cp.signature), context=CHECKPOINT_CONTEXT)
            except TinkerError as exc:
                return report(False, len(entries), j, None, f"checkpoint {j}: {exc}")
            if cp.size > tree.size or roots[cp.size].hex() != cp.root_hash:
                return report(False, len(entries), j, None, f"checkpoint {j} does not match the entries.")
        return report(True, len(entries), len(cps), None, None, tree.root().hex())

    def state(self) -> dict:
        n, head = self.head_info()
        cps = self.checkpoints()
        return {"entries": n, "head_hash": head, "last_checkpoint": cps[-1].to_dict() if cps else None,
                "last_verification": self.last_verification.to_dict() if self.last_verification else None}

    def to_pandas(self):
        import pandas as pd

        rows = [e.__dict__ for e in self.entries()]
        return pd.DataFrame(rows, columns=["seq", "ts", "tenant", "operation", "params_digest", "summary",
                                           "prev_hash", "record_hash"])


class _RemoteKeystore:
    def __init__(self, http: _Http) -> None:
        self._http = http

    def key_info(self, tenant: str | None = None) -> dict:
        return from_wire(self._http.request("GET", "/keys"), cls=dict)

    def __repr__(self) -> str:
        return "RemoteKeystore(keys stay on the server)"


class RemoteServiceClient(ServiceClient):
    """``ServiceClient`` for a `tinker-nb serve` server: ``RemoteServiceClient(base_url=..., api_key=...)``.

    Defaults come from ``TINKER_NB_BASE_URL`` and ``TINKER_NB_API_KEY``. The tenant is the API key's.
    ``busy_timeout``: how long to keep retrying when the server answers 429 (then ServerBusyError).
    """

    def __init__(self, workspace: Any = None, *, base_url: str | None = None, api_key: str | None = None,
                 tenant: str | None = None, timeout: float = 120.0, retries: int = 3, busy_timeout: float = 30.0,
                 passphrase: str | None = None, key_file: Any = None) -> None:
        if workspace is not None or passphrase is not None or key_file is not None:
            raise ConfigError("a remote ServiceClient has no local workspace, passphrase or key file: the "
                              "workspace and its keys live on the server. Pass base_url and api_key only.")
        base_url = base_url or os.environ.get(BASE_URL_ENV)
        api_key = api_key or os.environ.get(API_KEY_ENV)
        if not base_url:
            raise ConfigError(f"base_url is needed (or set {BASE_URL_ENV}), e.g. 'http://127.0.0.1:8000'.")
        if not api_key:
            raise ConfigError(f"api_key is needed (or set {API_KEY_ENV}); create one with "
                              "`tinker-nb apikey create --tenant NAME`.")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}.")
        self.base_url = base_url.rstrip("/")
        self._http = _Http(self.base_url, api_key, timeout=timeout, retries=retries, busy_timeout=busy_timeout)
        who = self._http.request("GET", "/whoami")
        if tenant not in (None, "default", who["tenant"]):
            self._http.close()
            raise ConfigError(f"this API key belongs to tenant {who['tenant']!r}, not {tenant!r}.")
        self.tenant = who["tenant"]
        self.key_id = who["key_id"]
        self._ledger = RemoteAuditLog(self._http, self.tenant)
        self._clients: list = []

    def __repr__(self) -> str:
        return f"RemoteServiceClient(base_url={self.base_url!r}, tenant={self.tenant!r})"

    # -- the workspace lives on the server ---------------------------------------------------------
    @property
    def workspace(self) -> None:  # type: ignore[override]  # the workspace is the server's
        """None: the workspace (keys, checkpoints, ledger, budgets) is the server's."""
        return None

    @property
    def keystore(self):
        return _RemoteKeystore(self._http)

    @property
    def store(self):
        raise ConfigError("the artifact store is on the server; use list_checkpoints(), save_state and load_state.")

    @property
    def ledger(self) -> RemoteAuditLog:
        return self._ledger

    def publisher_key(self):
        from ..security.signing import load_public_key

        return load_public_key(self._http.request("GET", "/publisher_key"))

    def audit(self, operation: str, params: dict, summary: dict | None = None) -> None:
        raise ConfigError("a remote client cannot append to the server's audit ledger directly; every operation "
                          "it runs is audited by the server.")

    # -- clients -------------------------------------------------------------------------------------
    def create_training_client(self, config: TrainingConfig | None = None, *, noise_seed: int | None = None,
                               **overrides: Any) -> RemoteTrainingClient:
        if noise_seed is not None:
            raise ConfigError("noise_seed cannot be fixed on a server: the noise must stay secret.")
        if config is None:
            config = TrainingConfig(**overrides)
        elif overrides:
            raise ConfigError("pass either a TrainingConfig or keyword settings, not both.")
        if not isinstance(config, TrainingConfig):
            raise ConfigError(f"create_training_client expects a TrainingConfig, got {type(config).__name__}.")
        d = config.to_dict()
        if d.get("tenant") in ("default", self.tenant):
            d.pop("tenant", None)
        info = self._http.request("POST", "/training_clients", json_body={"config": d})
        tc = RemoteTrainingClient(self, info)
        self._clients.append(tc)
        return tc

    def training_clients(self) -> list[RemoteTrainingClient]:  # type: ignore[override]  # list is invariant
        """The open training clients this RemoteServiceClient created, oldest first."""
        return [tc for tc in self._clients if not tc.closed]

    def training_client(self, training_client_id: str) -> RemoteTrainingClient:
        """Reattach to an open training client of this tenant by id (e.g. from another kernel)."""
        return RemoteTrainingClient(self, self._http.request("GET", f"/training_clients/{training_client_id}"))

    def list_training_clients(self) -> list[dict]:
        return [from_wire(x, cls=dict) for x in self._http.request("GET", "/training_clients")]

    def list_checkpoints(self) -> list[dict]:
        return [from_wire(x, cls=dict) for x in self._http.request("GET", "/checkpoints")]

    def upload_dataset(self, records: Sequence[Any], *, name: str = "dataset") -> dict:
        """Upload private records once (stored encrypted on the server); attach them by ``dataset_id``."""
        return from_wire(self._http.request("POST", "/datasets", json_body={"records": _normalise(records),
                                                                               "name": name}), cls=dict)

    def list_datasets(self) -> list[dict]:
        return [from_wire(x, cls=dict) for x in self._http.request("GET", "/datasets")]

    def rotate_keys(self) -> dict:
        return from_wire(self._http.request("POST", "/keys/rotate"), cls=dict)

    def privacy_budgets(self) -> list[dict]:
        """Every data set this tenant has charged on the server, once each, with its steps and the privacy spent."""
        return [from_wire(x, cls=dict) for x in self._http.request("GET", "/privacy_budgets")]

    @property
    def odometer(self):
        raise ConfigError("the privacy odometer lives in the server's workspace; read it with privacy_budgets() "
                          "or get_dp_metrics().")

    def collect_garbage(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError("garbage collection of the artifact store is an operator action on the server's "
                          "workspace, not an API call.")

    def shred_tenant(self, *, confirm: str) -> dict:
        raise ConfigError("crypto-shredding a tenant is an operator action on the server's workspace "
                          "(ServiceClient(workspace, tenant=...).shred_tenant there), not an API call.")

    def close(self) -> None:
        for tc in self._clients:
            tc.events.stop()
        self._http.close()

    def __enter__(self) -> RemoteServiceClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RemoteTrainingClient(TrainingClient):
    """A training client on the server, with the in-kernel TrainingClient's methods."""

    events: _RemoteEvents

    def __init__(self, service: RemoteServiceClient, info: dict) -> None:
        self.service = service
        self._http = service._http
        self.id = info["training_client_id"]
        cfg = dict(info.get("config") or {})
        try:
            self.config = TrainingConfig.from_dict(cfg)
        except TinkerError:
            cfg.pop("tenant", None)
            self.config = TrainingConfig.from_dict(cfg)
        self.events = _RemoteEvents(self)
        self.created_at = time.time()
        self._submit_lock = threading.Lock()
        self._session_view = _RemoteSession(self)
        self.closed = info.get("status") not in ("open", None)

    def __repr__(self) -> str:
        return (f"RemoteTrainingClient(id={self.id!r}, model={self.config.model_ref!r}, "
                f"rank={self.config.lora_config.rank}, server={self._http.base_url!r}"
                f"{', closed' if self.closed else ''})")

    def __del__(self) -> None:  # nothing local to release; the server closes idle clients
        pass

    # -- plumbing --------------------------------------------------------------------------------
    def _path(self, suffix: str) -> str:
        return f"/training_clients/{self.id}/{suffix}"

    def _submit(self, op: str, suffix: str, body: Any = None) -> RemoteFuture:
        with self._submit_lock:  # one at a time, in call order: the server queues in arrival order
            view = self._http.request("POST", self._path(suffix), json_body=body)
        return RemoteFuture(self._http, view, op)

    def _call(self, op: str, suffix: str, body: Any = None) -> Any:
        with self._submit_lock:
            view = self._http.request("POST", self._path(suffix), json_body=body, params={"wait": LONG_POLL_S})
        return _answer(self._http, view, op)

    def info(self) -> dict:
        """The server's view of this client: status, steps, queued operations, data set."""
        return from_wire(self._http.request("GET", f"/training_clients/{self.id}"), cls=dict)

    @property
    def session(self) -> _RemoteSession:
        return self._session_view

    # -- data ----------------------------------------------------------------------------------------
    def attach_dataset(
            self, records: Sequence[Any] | None = None, *, dataset_id: str | None = None,
            charge_also: Any = None) -> dict:
        """Upload the private records (once; stored encrypted on the server) or attach an uploaded ``dataset_id``.

        ``charge_also``: as in-kernel, record collections contained in the attached records (e.g. your data
        inside a privacy audit run that adds canaries) whose own budgets every step charges too; they are
        sent to the server, which checks that each one is part of the attached records.
        """
        if (records is None) == (dataset_id is None):
            raise ConfigError("pass the records, or dataset_id= of a data set uploaded with upload_dataset().")
        body: dict[str, Any]
        if records is not None:
            body = {"records": _normalise(records)}
        else:
            body = {"dataset_id": dataset_id}
        from ..records import charge_also_subsets

        subsets = [_normalise(sub) for sub in charge_also_subsets(charge_also)]
        if subsets:
            body["charge_also"] = subsets
        return dict(self._call("attach_dataset", "dataset", body))

    def poisson_batches(  # type: ignore[override]  # draws stay on the server: opaque handles
            self, *, epochs: float | None = None, steps: int | None = None) -> Iterator[RemoteDraw]:
        """Poisson draws made on the server, one per step, as opaque ``RemoteDraw`` handles."""
        body = {k: v for k, v in (("epochs", epochs), ("steps", steps)) if v is not None}

        def gen() -> Iterator[RemoteDraw]:
            with self._submit_lock:
                it = self._http.request("POST", self._path("draws"), json_body=body, wait_for_queue=True)
            iid, total = it["iterator_id"], it.get("total")
            if isinstance(total, int):
                # Lazy handles: no request per draw; the server takes draw k, in order, when the
                # forward_backward that names it runs (as in-kernel handles are sampled when trained on).
                for k in range(1, total + 1):
                    yield RemoteDraw(f"{iid}:{k}", k, self.id)
                return
            while True:
                with self._submit_lock:
                    d = self._http.request("POST", self._path(f"draws/{iid}/next"))
                if d.get("done"):
                    return
                yield RemoteDraw(d["draw_id"], int(d.get("index") or 0), self.id)

        return gen()

    def planned_steps(self, epochs: float | None = None) -> int:
        params = {"epochs": epochs} if epochs is not None else None
        return int(self._http.request("GET", self._path("planned_steps"), params=params,
                                      wait_for_queue=True)["steps"])

    # -- Tinker primitives -----------------------------------------------------------------------------
    def forward_backward(self, batch: Any) -> RemoteFuture:
        if isinstance(batch, RemoteDraw):
            if batch.client_id != self.id:
                from ..errors import DataError

                raise DataError("this draw belongs to another training client.")
            body = {"draw_id": batch.draw_id}
        else:
            body = {"batch": to_jsonable(batch)}
        return self._submit("forward_backward", "forward_backward", body)

    def forward(self, batch: Any) -> WireObject:  # type: ignore[override]  # remote results are wire objects with the same fields
        """Per-example loss and per-token log-probabilities of your batch (no gradients; the step is untouched)."""
        if isinstance(batch, RemoteDraw):
            raise ConfigError("forward scores your own batch; a draw is for forward_backward.")
        return self._call("forward", "forward", {"batch": to_jsonable(batch)})

    def adapter_state_dict(self) -> dict:
        """A copy of the trainable LoRA weights under PEFT names (CPU tensors), downloaded from the server."""
        from safetensors.torch import load

        res = self._call("adapter_state_dict", "adapter")
        r = self._http.request("GET", f"/packages/{res['download_id']}", raw=True)
        return load(r.content)

    def run_record(self) -> dict:
        raise ConfigError("run_record() holds the server-side checkpoint blobs; use save_state() and package(), "
                          "which build them on the server.")

    @property
    def tokenizer(self):
        """The base model's tokenizer, loaded here from the same model ref (it is public, not private data)."""
        tok = getattr(self, "_tokenizer", None)
        if tok is None:
            from transformers import AutoTokenizer

            try:
                from ..engine.assets import resolve_model_ref

                ref = resolve_model_ref(self.config.model_ref)
            except Exception:  # noqa: BLE001
                ref = self.config.model_ref
            try:
                tok = AutoTokenizer.from_pretrained(ref)
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"the tokenizer of {self.config.model_ref!r} is not available on this machine "
                                  f"({type(exc).__name__}); install or cache the model here.") from None
            self._tokenizer = tok
        return tok

    def get_tokenizer(self):
        return self.tokenizer

    def optim_step(self, *, learning_rate: float | None = None) -> RemoteFuture:
        return self._submit("optim_step", "optim_step", {"learning_rate": learning_rate} if learning_rate else None)

    def sample(self, prompts: str | Sequence[str], *, max_tokens: int = 32, temperature: float = 0.0,
               top_p: float = 1.0, top_k: int | None = None, stop: str | Sequence[str] | None = None,
               seed: int | None = None, num_samples: int = 1) -> WireObject:
        body = {"prompts": prompts if isinstance(prompts, str) else list(prompts), "max_tokens": max_tokens,
                "temperature": temperature, "top_p": top_p, "top_k": top_k,
                "stop": stop if stop is None or isinstance(stop, str) else list(stop), "seed": seed,
                "num_samples": num_samples}
        return self._call("sample", "sample", body)

    def get_dp_metrics(self) -> WireObject:  # type: ignore[override]  # remote results are wire objects with the same fields
        return from_wire(self._http.request("GET", self._path("dp_metrics"), wait_for_queue=True))

    def metrics_history(self) -> list[dict]:
        return self.session.metrics_history

    # -- checkpoints ------------------------------------------------------------------------------------
    def save_state(self, name: str | None = None, *, include_optimizer: bool = True,
                   metadata: dict | None = None) -> SaveResult:
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 200):
            raise ConfigError("save_state needs a non-empty name of at most 200 characters (or none: step-<n>).")
        if metadata is not None and not isinstance(metadata, dict):
            raise ConfigError("metadata must be a dict of JSON values.")
        res = self._call("save_state", "save_state", {"name": name, "include_optimizer": include_optimizer,
                                                      "metadata": metadata})
        return SaveResult(res.to_dict() if hasattr(res, "to_dict") else dict(res))

    def load_state(self, artifact_id: str) -> dict:  # type: ignore[override]  # remote results are wire objects with the same fields
        if not isinstance(artifact_id, str) or not artifact_id:
            raise ConfigError("artifact_id must be the id returned by save_state (see list_checkpoints()).")
        return dict(self._call("load_state", "load_state", {"artifact_id": artifact_id}))

    def list_checkpoints(self) -> list[dict]:
        return self.service.list_checkpoints()

    # -- audit, packaging, widgets ----------------------------------------------------------------------
    def drain(self) -> None:
        """Wait until every operation submitted so far has run on the server."""
        self._http.request("POST", self._path("drain"), wait_for_queue=True)

    def audit_log(self) -> RemoteAuditLog:
        self.drain()
        return self.service.ledger

    def package(self, path: str | os.PathLike, *, recipients: Sequence[Any], signer: Any = None,
                expires_in_days: float = 365.0, **kwargs: Any) -> dict:
        """Build the signed package on the server (workspace publisher key) and download it to ``path``."""
        from ..security.kem import load_recipient

        if signer is not None:
            raise ConfigError("a remote package is signed by the server's workspace publisher key; a signer "
                              "(private key) is never sent to the server. Omit signer=.")
        if kwargs:
            raise ConfigError(f"unsupported package options for a remote client: {sorted(kwargs)}.")
        out = Path(path)
        if not out.parent.is_dir():
            raise ConfigError(f"folder {out.parent} does not exist.")
        recips = [load_recipient(r).to_dict() for r in (recipients or [])]
        if not recips:
            raise ConfigError("package needs at least one recipient public key.")
        res = dict(self._call("package", "package", {"recipients": recips, "expires_in_days": expires_in_days}))
        did = res.pop("download_id")
        res.pop("download", None)
        r = self._http.request("GET", f"/packages/{did}", raw=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=".tgsp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(r.content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        for k, v in list(res.items()):
            if isinstance(v, str) and v == f"{did}.tgsp":
                res[k] = str(out)
        res["path"] = str(out)
        return res

    def dashboard(self, **kwargs: Any):
        """The live dashboard, fed by the server's event stream (same widget as in-kernel)."""
        from ..notebook.dashboard import Dashboard

        return Dashboard.for_client(self, **kwargs)

    def _check_open(self) -> None:
        if self.closed:
            raise StateError("this training client is closed; create a new one.")

    # -- lifecycle --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Finish queued work on the server and release the client there. Idempotent."""
        if self.closed:
            return
        try:
            self._call("close", "close")
        finally:
            self.closed = True
            self.events.stop()
