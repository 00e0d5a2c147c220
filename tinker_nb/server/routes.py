"""REST routes of the Training API (``/api/v1``). See docs/SERVER.md for the table.

Operation POSTs queue a job on the training client's ordered worker and answer at once with a future
(``202``, ``{"future_id", "status": "pending"}``); with ``?wait=S`` they wait up to S seconds and answer
the finished future (``200``) or, if it failed, its error (4xx). ``GET /api/v1/futures/{id}?wait=S``
long-polls a future.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import secrets
import threading
import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from ..errors import ConfigError, StateError, TinkerError
from ..remote.wire import API_PREFIX, NotFoundError, to_jsonable
from .apikeys import ApiKeyInfo
from .auth import require_principal
from .models import (
    AttachBody,
    CreateClientBody,
    DatasetBody,
    DrawsBody,
    ErrorBody,
    ForwardBackwardBody,
    ForwardBody,
    FutureView,
    LoadStateBody,
    OptimStepBody,
    PackageBody,
    SampleBody,
    SaveStateBody,
)
from .runtime import ClientRunner, Job, JobFailure, ServerState

__all__ = ["build_router"]

MAX_WAIT_S = 60.0
LIMITS = {"rank": 512, "batch_size": 65_536, "max_seq_len": 65_536}
DATASET_KIND = "tinker-nb/dataset/v1"
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (401, 404, 409, 413, 422, 429)}


def _wait_param(wait: float = Query(0.0, ge=0.0, le=MAX_WAIT_S,
                                    description="seconds to wait for the result (long-poll)")) -> float:
    return wait


async def _await(job: Job, wait: float) -> None:
    if wait <= 0 or job.fut.done():
        return
    fut = asyncio.wrap_future(job.fut)
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no "never retrieved" noise
    await asyncio.wait({fut}, timeout=wait)


async def _future_answer(job: Job, runner: ClientRunner | None, wait: float) -> JSONResponse:
    await _await(job, wait)
    view = job.view(runner)
    if view["status"] == "pending":
        return JSONResponse(view, status_code=202)
    if view["status"] == "failed" and wait > 0:
        from .app import error_response

        err = view["error"]
        return error_response(err["type"], err["message"], future_id=job.future_id, status="failed")
    return JSONResponse(view)


async def _result(job: Job, runner: ClientRunner | None) -> Any:
    """Wait for a job without limit and return its value, or raise its error (synchronous endpoints)."""
    fut = asyncio.wrap_future(job.fut)
    try:
        return await fut
    except JobFailure as f:
        if runner is not None:
            runner.observed(f)
        from ..remote.wire import make_error

        raise make_error(f.type_name, f.message) from None


def _settle(fut: Any) -> Any:
    """The in-process future's value; its error is raised here once and marked seen (not raised again later)."""
    try:
        return fut.result()
    except BaseException:
        try:
            fut.exception(0)  # the future is done now: this marks its failure as observed
        except Exception:  # noqa: BLE001
            pass
        raise


def _parse_config(state: ServerState, tenant: str, raw: dict) -> Any:
    from ..config import TrainingConfig

    d = dict(raw)
    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown TrainingConfig fields {sorted(unknown)}; expected some of {sorted(names)}.")
    if "tenant" in names:
        t = d.get("tenant")
        if t not in (None, "default", tenant):
            raise ConfigError(f"config.tenant {t!r} is not this API key's tenant; omit it.")
        d["tenant"] = tenant
    try:
        cfg = TrainingConfig.from_dict(d)
    except TinkerError:
        raise
    except Exception as exc:  # noqa: BLE001 - wrong nested types, unknown nested keys
        raise ConfigError(f"invalid TrainingConfig: {type(exc).__name__}: {exc}") from None
    if "*" not in state.allow_models and cfg.model_ref not in state.allow_models:
        raise ConfigError(f"model {cfg.model_ref!r} is not served here; allowed: {state.allow_models} "
                          "(the operator adds models with `tinker-nb serve --allow-model REF`).")
    if cfg.lora_config.rank > LIMITS["rank"] or cfg.batch_size > LIMITS["batch_size"] or \
            (cfg.max_seq_len or 0) > LIMITS["max_seq_len"]:
        raise ConfigError(f"this server limits LoRA rank to {LIMITS['rank']}, batch_size to {LIMITS['batch_size']} "
                          f"and max_seq_len to {LIMITS['max_seq_len']}.")
    return cfg


def build_router(state: ServerState) -> APIRouter:
    r = APIRouter()
    api = APIRouter(prefix=API_PREFIX, responses=_ERRORS)
    Principal = Depends(require_principal)

    def runner_of(p: ApiKeyInfo, client_id: str) -> ClientRunner:
        return state.runner(p.tenant, client_id)

    def live(p: ApiKeyInfo, client_id: str) -> ClientRunner:
        rn = runner_of(p, client_id)
        rn.check_open()
        return rn

    # ------------------------------------------------------------------ service
    @r.get("/healthz", tags=["service"])
    async def healthz() -> dict:
        from .. import __version__

        return {"status": "ok", "version": __version__, "open_clients": state.open_clients(),
                "max_clients": state.max_clients}

    @api.get("/whoami", tags=["service"])
    async def whoami(p: ApiKeyInfo = Principal) -> dict:
        return {"tenant": p.tenant, "key_id": p.key_id}

    # ------------------------------------------------------------------ training clients
    @api.post("/training_clients", status_code=201, tags=["training clients"])
    async def create_training_client(body: CreateClientBody, p: ApiKeyInfo = Principal) -> dict:
        cfg = _parse_config(state, p.tenant, body.config)
        state.reserve_slot()
        opened = False
        try:
            svc = await run_in_threadpool(state.service, p.tenant)
            def make():
                with state.create_lock:
                    return svc.create_training_client(cfg)

            try:
                tc = await run_in_threadpool(make)
            except TinkerError:
                raise
            except Exception as exc:  # noqa: BLE001 - model files unreadable, out of memory while loading, ...
                raise ConfigError(f"could not create the training client ({type(exc).__name__}); check "
                                  f"model_ref {cfg.model_ref!r} and the sizes in the config.") from None
            opened = True
        finally:
            state.unreserve(opened=opened)
        cid = f"tc_{secrets.token_hex(12)}"
        runner = ClientRunner(state, cid, p.tenant, tc, to_jsonable(cfg.to_dict()))
        state.clients[cid] = runner
        return runner.info()

    @api.get("/training_clients", tags=["training clients"])
    async def list_training_clients(p: ApiKeyInfo = Principal) -> list[dict]:
        return [rn.info() for rn in list(state.clients.values()) if rn.tenant == p.tenant]

    @api.get("/training_clients/{client_id}", tags=["training clients"])
    async def get_training_client(client_id: str, p: ApiKeyInfo = Principal) -> dict:
        return runner_of(p, client_id).info()

    @api.post("/training_clients/{client_id}/close", tags=["training clients"], response_model=FutureView)
    async def close(client_id: str, p: ApiKeyInfo = Principal, wait: float = Depends(_wait_param)):
        rn = runner_of(p, client_id)
        if rn.status != "open":
            return JSONResponse({"future_id": "", "op": "close", "training_client_id": client_id,
                                 "created": rn.created, "status": "done",
                                 "result": {"training_client_id": client_id, "status": rn.status,
                                            "steps": rn.steps}})
        return await _future_answer(rn.close_job(), rn, wait)

    # ------------------------------------------------------------------ data
    def _store_dataset(tenant: str, records: list, name: str) -> dict:
        from ..canonical import canonical_json

        svc = state.service(tenant)
        data = canonical_json(records)
        sha = hashlib.sha256(data).hexdigest()
        info = svc.store.save(name, {"records.json": data}, metadata={"kind": DATASET_KIND},
                              public={"kind": DATASET_KIND, "records": len(records)})
        aid = info.artifact_id if hasattr(info, "artifact_id") else dict(info)["artifact_id"]
        return {"dataset_id": aid, "name": name, "records": len(records), "sha256": sha}

    def _load_dataset(tenant: str, dataset_id: str) -> list:
        svc = state.service(tenant)
        if dataset_id not in {d["dataset_id"] for d in _datasets(tenant)}:
            raise NotFoundError(f"no data set {dataset_id!r}; upload one with POST {API_PREFIX}/datasets.")
        blobs, _meta, _ = svc.store.load(dataset_id)
        return json.loads(blobs["records.json"])

    def _artifacts(tenant: str) -> list[dict]:
        return [to_jsonable(x) for x in state.service(tenant).store.list()]

    def _datasets(tenant: str) -> list[dict]:
        return [{"dataset_id": a["artifact_id"], "name": a["name"], "records": a["public"].get("records"),
                 "created": a["created"]}
                for a in _artifacts(tenant) if (a.get("public") or {}).get("kind") == DATASET_KIND]

    @api.post("/datasets", status_code=201, tags=["data"])
    async def upload_dataset(body: DatasetBody, p: ApiKeyInfo = Principal) -> dict:
        """Store private records encrypted at rest under the tenant's keys; answer an opaque id."""
        return await run_in_threadpool(_store_dataset, p.tenant, body.records, body.name)

    @api.get("/datasets", tags=["data"])
    async def list_datasets(p: ApiKeyInfo = Principal) -> list[dict]:
        return await run_in_threadpool(_datasets, p.tenant)

    @api.post("/training_clients/{client_id}/dataset", tags=["data"], response_model=FutureView)
    async def attach_dataset(client_id: str, body: AttachBody, p: ApiKeyInfo = Principal,
                             wait: float = Depends(_wait_param)):
        rn = live(p, client_id)
        if (body.dataset_id is None) == (body.records is None):
            raise ConfigError("give either dataset_id (an uploaded data set) or records.")
        if body.dataset_id is not None:
            if body.dataset_id not in {d["dataset_id"] for d in await run_in_threadpool(_datasets, p.tenant)}:
                raise NotFoundError(f"no data set {body.dataset_id!r}.")
            ds = {"dataset_id": body.dataset_id}
        else:
            assert body.records is not None  # exactly one of dataset_id and records, checked above
            ds = await run_in_threadpool(_store_dataset, p.tenant, body.records, "dataset")

        def run():
            records = _load_dataset(p.tenant, ds["dataset_id"])
            info = rn.tc.attach_dataset(records, charge_also=body.charge_also)
            out = dict(to_jsonable(info)) if isinstance(to_jsonable(info), dict) else {"info": to_jsonable(info)}
            out["dataset_id"] = ds["dataset_id"]
            rn.dataset = {"dataset_id": ds["dataset_id"], "records": len(records)}
            return out

        return await _future_answer(rn.submit("attach_dataset", run), rn, wait)

    @api.post("/training_clients/{client_id}/draws", tags=["data"])
    async def start_draws(client_id: str, body: DrawsBody, p: ApiKeyInfo = Principal) -> dict:
        """A server-side Poisson draw iterator (``poisson_batches``); take draws with ``.../next``."""
        rn = live(p, client_id)
        if body.steps is not None and body.epochs is not None:
            raise ConfigError("give steps or epochs, not both.")

        def run():
            it = rn.tc.poisson_batches(steps=body.steps, epochs=body.epochs)
            total = body.steps
            if total is None:
                try:
                    total = int(rn.tc.planned_steps(body.epochs))
                except Exception:  # noqa: BLE001 - informative only
                    total = None
            iid = f"it_{secrets.token_hex(8)}"
            rn.iterators[iid] = {"it": iter(it), "total": total, "taken": 0, "lock": threading.Lock()}
            return {"iterator_id": iid, "total": total}

        return await _result(rn.submit("poisson_batches", run), rn)

    @api.post("/training_clients/{client_id}/draws/{iterator_id}/next", tags=["data"])
    async def next_draw(client_id: str, iterator_id: str, p: ApiKeyInfo = Principal) -> dict:
        """The next Poisson draw, as an opaque ``draw_id`` (``done: true`` when the iterator is exhausted).

        Like the in-kernel generator, a draw is made at once, while earlier steps may still be running.
        """
        rn = live(p, client_id)
        st = rn.iterators.get(iterator_id)
        if st is None:
            raise NotFoundError(f"no draw iterator {iterator_id!r}.")

        def run():
            with st["lock"]:
                rn.check_open()
                try:
                    handle = next(st["it"])
                except StopIteration:
                    rn.iterators.pop(iterator_id, None)
                    return {"done": True, "draw_id": None, "index": st["taken"], "total": st["total"]}
                st["taken"] += 1
                rn.last_used = time.monotonic()
                return {"done": False, "draw_id": rn.register_draw(handle), "index": st["taken"],
                        "total": st["total"]}

        try:
            return await run_in_threadpool(run)
        except TinkerError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine failed while drawing: the iterator is unusable
            rn.iterators.pop(iterator_id, None)
            raise StateError(f"the draw failed ({type(exc).__name__}); start a new poisson_batches().") from None

    # ------------------------------------------------------------------ Tinker primitives
    @api.post("/training_clients/{client_id}/forward_backward", tags=["training"], response_model=FutureView)
    async def forward_backward(client_id: str, body: ForwardBackwardBody, p: ApiKeyInfo = Principal,
                               wait: float = Depends(_wait_param)):
        rn = live(p, client_id)
        if (body.draw_id is None) == (body.batch is None):
            raise ConfigError("give either draw_id (from poisson_batches) or batch.")
        lazy = rn.lazy_ref(body.draw_id) if body.draw_id is not None else None
        draw_id = body.draw_id or ""  # set whenever lazy is
        if lazy is not None:
            rn.claim_lazy(draw_id, *lazy)
            x = None
        else:
            x = rn.take_draw(body.draw_id) if body.draw_id is not None else body.batch

        def run():
            data = rn.materialize(draw_id, *lazy) if lazy is not None else x
            return _settle(rn.tc.forward_backward(data))

        return await _future_answer(rn.submit("forward_backward", run), rn, wait)

    @api.post("/training_clients/{client_id}/forward", tags=["training"], response_model=FutureView)
    async def forward(client_id: str, body: ForwardBody, p: ApiKeyInfo = Principal, wait: float = Depends(_wait_param)):
        """Per-example loss and per-token log-probabilities of a caller-supplied batch (no gradients)."""
        rn = live(p, client_id)
        return await _future_answer(rn.submit("forward", lambda: rn.tc.forward(body.batch)), rn, wait)

    @api.get("/training_clients/{client_id}/planned_steps", tags=["data"])
    async def planned_steps(client_id: str, p: ApiKeyInfo = Principal,
                            epochs: float | None = Query(None, gt=0, le=1_000_000)) -> dict:
        rn = live(p, client_id)
        return await _result(rn.submit("planned_steps", lambda: {"steps": rn.tc.planned_steps(epochs)},
                                       ordered_state_change=False), rn)

    @api.post("/training_clients/{client_id}/adapter", tags=["checkpoints"], response_model=FutureView)
    async def adapter(client_id: str, p: ApiKeyInfo = Principal, wait: float = Depends(_wait_param)):
        """The trainable LoRA weights (PEFT names) as safetensors, to download: what a package would carry."""
        rn = live(p, client_id)
        dl_id = f"dl_{secrets.token_hex(12)}"

        def run():  # kept in memory only (plaintext weights never touch the server's disk), downloaded once
            from safetensors.torch import save

            sd = rn.tc.adapter_state_dict()
            data = save({k: v.contiguous() for k, v in sd.items()})
            state.downloads[dl_id] = (p.tenant, data)
            return {"download_id": dl_id, "tensors": len(sd), "size": len(data),
                    "download": f"{API_PREFIX}/packages/{dl_id}"}

        return await _future_answer(rn.submit("adapter_state_dict", run, ordered_state_change=False), rn, wait)

    @api.get("/privacy_budgets", tags=["training"])
    async def privacy_budgets(p: ApiKeyInfo = Principal) -> list[dict]:
        """Every data set this tenant has charged, with its steps and the privacy spent (the odometer)."""
        def run():
            svc = state.service(p.tenant)
            if not hasattr(svc, "privacy_budgets"):
                return []
            return to_jsonable(svc.privacy_budgets())

        return await run_in_threadpool(run)

    @api.post("/training_clients/{client_id}/optim_step", tags=["training"], response_model=FutureView)
    async def optim_step(client_id: str, body: OptimStepBody | None = None, p: ApiKeyInfo = Principal,
                         wait: float = Depends(_wait_param)):
        rn = live(p, client_id)
        lr = body.learning_rate if body is not None else None

        def run():
            return _settle(rn.tc.optim_step(learning_rate=lr))

        return await _future_answer(rn.submit("optim_step", run), rn, wait)

    @api.post("/training_clients/{client_id}/sample", tags=["training"], response_model=FutureView)
    async def sample(client_id: str, body: SampleBody, p: ApiKeyInfo = Principal, wait: float = Depends(_wait_param)):
        rn = live(p, client_id)
        kw = body.model_dump()
        prompts = kw.pop("prompts")
        if isinstance(prompts, list) and (not prompts or len(prompts) > 256):
            raise ConfigError("prompts must be a string or a list of 1 to 256 strings.")
        return await _future_answer(rn.submit("sample", lambda: rn.tc.sample(prompts, **kw)), rn, wait)

    @api.get("/training_clients/{client_id}/dp_metrics", tags=["training"])
    async def dp_metrics(client_id: str, p: ApiKeyInfo = Principal) -> dict:
        """ε spent, ε remaining, δ, steps, σ, C, q, ... after every queued operation of this client."""
        rn = live(p, client_id)
        return await _result(rn.submit("get_dp_metrics", rn.tc.get_dp_metrics), rn)

    @api.get("/training_clients/{client_id}/metrics_history", tags=["training"])
    async def metrics_history(client_id: str, p: ApiKeyInfo = Principal) -> dict:
        """Per-step records (loss, ε live, throughput) and the id of the last event, for dashboards."""
        rn = live(p, client_id)

        def run():
            last = rn.events.last_id  # events after this id are not in the history below
            tc = rn.tc
            hist = tc.metrics_history() if hasattr(tc, "metrics_history") else tc.session.metrics_history
            return {"history": hist, "last_event_id": last}

        return await _result(rn.submit("metrics_history", run, ordered_state_change=False), rn)

    @api.post("/training_clients/{client_id}/drain", tags=["training"])
    async def drain(client_id: str, p: ApiKeyInfo = Principal) -> dict:
        """Wait until every operation queued so far on this client has finished."""
        rn = live(p, client_id)
        return await _result(rn.submit("drain", lambda: {"steps": rn.steps}, ordered_state_change=False), rn)

    # ------------------------------------------------------------------ checkpoints
    @api.post("/training_clients/{client_id}/save_state", tags=["checkpoints"], response_model=FutureView)
    async def save_state(client_id: str, body: SaveStateBody, p: ApiKeyInfo = Principal,
                         wait: float = Depends(_wait_param)):
        rn = live(p, client_id)

        def run():
            return rn.tc.save_state(body.name, include_optimizer=body.include_optimizer, metadata=body.metadata)

        return await _future_answer(rn.submit("save_state", run), rn, wait)

    @api.post("/training_clients/{client_id}/load_state", tags=["checkpoints"], response_model=FutureView)
    async def load_state(client_id: str, body: LoadStateBody, p: ApiKeyInfo = Principal,
                         wait: float = Depends(_wait_param)):
        rn = live(p, client_id)
        ids = {a["artifact_id"] for a in await run_in_threadpool(_artifacts, p.tenant)
               if (a.get("public") or {}).get("kind") != DATASET_KIND}
        if body.artifact_id not in ids:
            raise NotFoundError(f"no checkpoint {body.artifact_id!r}; list them with GET {API_PREFIX}/checkpoints.")
        return await _future_answer(rn.submit("load_state", lambda: rn.tc.load_state(body.artifact_id)), rn, wait)

    @api.get("/checkpoints", tags=["checkpoints"])
    async def checkpoints(p: ApiKeyInfo = Principal) -> list[dict]:
        arts = await run_in_threadpool(_artifacts, p.tenant)
        return [a for a in arts if (a.get("public") or {}).get("kind") != DATASET_KIND]

    # ------------------------------------------------------------------ packages
    @api.post("/training_clients/{client_id}/package", tags=["packages"], response_model=FutureView)
    async def package(client_id: str, body: PackageBody, p: ApiKeyInfo = Principal, wait: float = Depends(_wait_param)):
        """Build a signed TGSP package of the current adapter (signed with the workspace publisher key)."""
        from ..security.kem import load_recipient

        rn = live(p, client_id)
        try:
            recips = [load_recipient(d) for d in body.recipients]
        except TinkerError:
            raise
        except Exception:  # noqa: BLE001 - any malformed key document is the caller's error
            raise ConfigError("recipients must be recipient public keys (RecipientPublicKey.to_dict()).") from None
        pkg_dir = state.path / "server" / "packages" / p.tenant
        pkg_id = f"pkg_{secrets.token_hex(12)}"

        def run():
            pkg_dir.mkdir(parents=True, exist_ok=True)
            out = pkg_dir / f"{pkg_id}.tgsp"
            res = to_jsonable(rn.tc.package(out, recipients=recips, expires_in_days=body.expires_in_days))
            state.packages[pkg_id] = (p.tenant, out)
            res = dict(res) if isinstance(res, dict) else {"info": res}
            for k, v in list(res.items()):
                if isinstance(v, str) and str(pkg_dir) in v:
                    res[k] = f"{pkg_id}.tgsp"
            res.update(download_id=pkg_id, size=out.stat().st_size, download=f"{API_PREFIX}/packages/{pkg_id}")
            return res

        return await _future_answer(rn.submit("package", run), rn, wait)

    @api.get("/packages/{download_id}", tags=["packages"], response_class=FileResponse)
    async def download_package(download_id: str, p: ApiKeyInfo = Principal):
        """The bytes of a package built by ``.../package`` (its ``download_id``)."""
        mem = state.downloads.get(download_id)
        if mem is not None and mem[0] == p.tenant:
            state.downloads.pop(download_id, None)
            return Response(mem[1], media_type="application/octet-stream")
        ent = state.packages.get(download_id)
        if ent is None or ent[0] != p.tenant or not ent[1].is_file():
            raise NotFoundError(f"no package download {download_id!r}.")
        return FileResponse(ent[1], media_type="application/zip", filename=f"{download_id}.tgsp")

    # ------------------------------------------------------------------ futures and events
    @api.get("/futures/{future_id}", tags=["futures"], response_model=FutureView)
    async def get_future(future_id: str, p: ApiKeyInfo = Principal, wait: float = Depends(_wait_param)):
        job = state.jobs.get(p.tenant, future_id)
        await _await(job, wait)
        rn = state.clients.get(job.client_id)
        return JSONResponse(job.view(rn), status_code=200)

    @api.get("/training_clients/{client_id}/events", tags=["events"],
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(client_id: str, request: Request, p: ApiKeyInfo = Principal,
                     after: int | None = Query(None, ge=0, description="replay events after this id")):
        """Server-sent events (step, forward_backward, save, load, audit, budget_warning, close, ...)."""
        rn = runner_of(p, client_id)
        last = request.headers.get("last-event-id")
        if after is None and last and last.isdigit():
            after = int(last)
        q, backlog = rn.events.subscribe(after)

        def fmt(item) -> str:
            eid, kind, data = item
            return f"id: {eid}\nevent: {kind}\ndata: {data}\n\n"

        async def gen():
            try:
                yield "retry: 1000\n: connected\n\n"
                for item in backlog:
                    yield fmt(item)
                while not (rn.events.closed and q.empty()):
                    try:
                        item = await asyncio.wait_for(q.get(), timeout=15.0)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if item is None:
                        break
                    yield fmt(item)
                yield "event: end\ndata: {}\n\n"
            finally:
                rn.events.unsubscribe(q)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ audit and keys (tenant-wide)
    def _ledger(tenant: str):
        return state.service(tenant).ledger

    @api.get("/audit/entries", tags=["audit"])
    async def audit_entries(p: ApiKeyInfo = Principal, start: int = Query(0, ge=0),
                            limit: int = Query(1000, ge=1, le=10_000)) -> dict:
        def run():
            led = _ledger(p.tenant)
            n = led.size()
            return {"entries": [to_jsonable(e) for e in led.entries(start, min(start + limit, n))], "size": n}

        return await run_in_threadpool(run)

    @api.get("/audit/state", tags=["audit"])
    async def audit_state(p: ApiKeyInfo = Principal) -> dict:
        def run():
            led = _ledger(p.tenant)
            n, head = led.head_info()
            last = getattr(led, "last_verification", None)
            return {"entries": n, "head_hash": head, "last_verification": to_jsonable(last)}

        return await run_in_threadpool(run)

    @api.post("/audit/verify", tags=["audit"])
    async def audit_verify(p: ApiKeyInfo = Principal) -> dict:
        """Recompute the hash chain and Merkle roots and check the signed checkpoints (server-side)."""
        return await run_in_threadpool(lambda: to_jsonable(_ledger(p.tenant).verify()))

    @api.get("/audit/checkpoints", tags=["audit"])
    async def audit_checkpoints(p: ApiKeyInfo = Principal) -> list[dict]:
        return await run_in_threadpool(lambda: [to_jsonable(c) for c in _ledger(p.tenant).checkpoints()])

    @api.post("/audit/checkpoint", tags=["audit"])
    async def audit_checkpoint(p: ApiKeyInfo = Principal) -> dict:
        """Sign a checkpoint (size, Merkle root) of the tenant's ledger now."""
        return await run_in_threadpool(lambda: to_jsonable(_ledger(p.tenant).checkpoint()))

    @api.get("/audit/proof/{seq}", tags=["audit"])
    async def audit_proof(seq: int, p: ApiKeyInfo = Principal) -> dict:
        def run():
            led = _ledger(p.tenant)
            if seq < 0 or seq >= led.size():
                raise NotFoundError(f"no ledger entry {seq}.")
            return to_jsonable(led.inclusion_proof(seq))

        return await run_in_threadpool(run)

    @api.get("/publisher_key", tags=["keys"])
    async def publisher_key(p: ApiKeyInfo = Principal) -> dict:
        """The workspace publisher public key (signs ledger checkpoints and packages): pin it to verify."""
        return await run_in_threadpool(lambda: to_jsonable(state.service(p.tenant).publisher_key().to_dict()))

    @api.get("/keys", tags=["keys"])
    async def key_info(p: ApiKeyInfo = Principal) -> dict:
        """The tenant's key versions (ids and versions only, never key material)."""
        return await run_in_threadpool(lambda: to_jsonable(state.service(p.tenant).keystore.key_info(p.tenant)))

    @api.post("/keys/rotate", tags=["keys"])
    async def rotate_keys(p: ApiKeyInfo = Principal) -> dict:
        """New primary KEK for the tenant; every checkpoint's DEK is rewrapped (audited)."""
        return await run_in_threadpool(lambda: to_jsonable(state.service(p.tenant).rotate_keys()))

    r.include_router(api)
    return r
