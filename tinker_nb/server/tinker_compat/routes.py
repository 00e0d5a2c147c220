"""The Tinker ``/api/v1`` routes (SDK 0.38), mounted under ``/tinker``: the SDK's ``base_url`` is
``http://host:port/tinker``. See docs/TINKER_COMPAT.md for what is supported.

Training POSTs answer an ``UntypedAPIFuture`` at once and run on the model's worker; the SDK then
long-polls ``retrieve_future`` (30 s, then 408 so it polls again at once). Results are JSON, except
forward_backward and sampling results, which are protobuf. A failure is ``200 {"error", "category"}``,
which the SDK raises as ``RequestFailedError``.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ...errors import ConfigError, DataError, StateError, TinkerError
from ...remote.wire import error_type, status_for
from ..apikeys import ApiKeyInfo
from ..auth import require_principal
from .policy import load_policy
from .runtime import CompatModel, FutureEntry, Sampler, TinkerCompat, TinkerFailure, check_rank, new_worker
from .wire import (
    T,
    TDatum,
    decode_forward_backward,
    encode_forward_backward_output,
    encode_sample_response,
    model_input_tokens,
    parse_json,
)

__all__ = ["build_tinker_router"]

IGNORE = -100
LORA_ALPHA = 32.0
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PROTO = "application/x-protobuf"


def _settle(fut: Any) -> Any:
    try:
        return fut.result()
    except BaseException:
        try:
            fut.exception(0)
        except Exception:  # noqa: BLE001
            pass
        raise


def _future_json(e: FutureEntry, **extra: Any) -> dict:
    return T.UntypedAPIFuture(request_id=e.request_id, **extra).model_dump(mode="json", exclude_none=True)


def _check_name(name: str | None, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DataError(f"{what} name must be 1-100 letters, digits, '.', '_' or '-' (starting with a letter or "
                        f"digit), got {name!r}.")
    return name


def build_tinker_router(state: Any, compat: TinkerCompat) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["tinker SDK"])
    Principal = Depends(require_principal)

    async def body_json(request: Request) -> Any:
        import json

        raw = await request.body()
        try:
            return json.loads(raw or b"{}"), raw
        except ValueError:
            raise DataError("the request body is not JSON.") from None

    # ------------------------------------------------------------------ configuration and sessions
    @r.post("/client/config")
    async def client_config(p: ApiKeyInfo = Principal) -> dict:
        chunk = max(1_000_000, state.max_body_bytes // 2)
        return T.ClientConfigResponse(
            use_pyqwest_transport=False, parallel_fwdbwd_chunks=False, proto_compress_fwdbwd=False,
            fwdbwd_max_chunk_len=1_000_000, fwdbwd_max_chunk_bytes_count=chunk,
            fwdbwd_dispatch_bytes_semaphore_size=max(chunk, 50_000_000)).model_dump(mode="json")

    @r.post("/client/dynamic_config")
    async def dynamic_config(p: ApiKeyInfo = Principal) -> dict:
        return T.ClientDynamicConfigResponse().model_dump(mode="json")

    @r.post("/create_session")
    async def create_session(request: Request, p: ApiKeyInfo = Principal) -> dict:
        await body_json(request)
        s = await run_in_threadpool(compat.create_session, p.tenant)
        return T.CreateSessionResponse(session_id=s.session_id).model_dump(mode="json")

    @r.post("/session_heartbeat")
    async def heartbeat(request: Request, p: ApiKeyInfo = Principal) -> Response:
        body, _ = await body_json(request)
        req = parse_json(T.SessionHeartbeatRequest, body)
        s = compat.sessions.get(req.session_id)
        if s is None or s.tenant != p.tenant or s.finished:
            return JSONResponse({"error": "no such live session"}, status_code=410)  # stops the heartbeat
        s.last_heartbeat = time.time()
        return JSONResponse(T.SessionHeartbeatResponse().model_dump(mode="json"))

    @r.post("/telemetry")
    async def telemetry(p: ApiKeyInfo = Principal) -> dict:
        return {"status": "accepted"}  # dropped: nothing leaves the server, nothing is stored

    @r.post("/sessions/{session_id}/finish")
    async def finish(session_id: str, request: Request, p: ApiKeyInfo = Principal) -> dict:
        body, _ = await body_json(request)
        reason = body.get("reason") if isinstance(body, dict) else None
        reason = reason.get("type", "unknown") if isinstance(reason, dict) else "unknown"
        await run_in_threadpool(compat.finish_session, p.tenant, session_id, str(reason)[:40])
        return {}

    @r.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @r.get("/get_server_capabilities")
    async def capabilities(p: ApiKeyInfo = Principal) -> dict:
        return {"supported_models": [{"model_name": m, "trainable": True, "sampleable": True}
                                     for m in state.allow_models if m != "*"]}

    # ------------------------------------------------------------------ models
    def training_config(tenant: str, base_model: str, rank: int, seed: int | None, lora: Any) -> tuple[Any, Any]:
        from ...config import LoRAConfig, TrainingConfig

        if not isinstance(base_model, str) or not base_model:
            raise ConfigError("base_model is required.")
        if "*" not in state.allow_models and base_model not in state.allow_models:
            raise ConfigError(f"base model {base_model!r} is not served here; allowed: {state.allow_models} (the "
                              "operator adds models with `tinker-nb serve --allow-model REF`).")
        mods: tuple[str, ...] = ()
        if lora is None or lora.train_attn:
            mods += ATTN
        if lora is None or lora.train_mlp:
            mods += MLP
        if not mods:
            raise ConfigError("train_attn and train_mlp are both off: nothing to train (train_unembed alone is "
                              "not supported).")
        policy = load_policy(state.path, tenant)
        cfg = TrainingConfig(model_ref=base_model, lora_config=LoRAConfig(rank=check_rank(rank), alpha=LORA_ALPHA,
                                                                          target_modules=mods),
                             dp_config=policy.dp_config(), batch_size=policy.batch_size, learning_rate=1e-4,
                             seed=seed if seed is not None else secrets.randbits(31), tenant=tenant,
                             device=policy.device)
        return cfg, policy

    def start_model(tenant: str, session_id: str, model_seq_id: int, make: Any, op: str,
                    base_model: str, rank: int, key: tuple, raw: bytes) -> FutureEntry:
        model_id = f"{session_id}:train:{model_seq_id}"

        def start(e: FutureEntry) -> None:
            m = CompatModel(model_id, tenant, session_id, base_model, rank, None, None, new_worker(model_id))
            try:
                compat.check_capacity()
                compat.register_model(m)
            except Exception as exc:  # noqa: BLE001
                from .runtime import failure_of

                e.fut.set_exception(failure_of(exc, op))
                return

            def run() -> dict:
                try:
                    return make(m)
                except BaseException:
                    m.closed = True
                    m.worker.shutdown()
                    raise

            m.worker.submit(e, run)

        return compat.idempotent(tenant, key, raw, op, start)

    @r.post("/create_model")
    async def create_model(request: Request, p: ApiKeyInfo = Principal) -> dict:
        body, raw = await body_json(request)
        req = parse_json(T.CreateModelRequest, body)
        compat.session(p.tenant, req.session_id)
        if req.optimizer_config is not None and getattr(req.optimizer_config, "type", "adamw") != "adamw":
            e = compat.failed(p.tenant, "create_model", TinkerFailure("only the AdamW optimizer is supported.", "user"))
            return _future_json(e)
        lora = req.lora_config
        rank = lora.rank if lora is not None else 32

        def make(m: CompatModel) -> dict:
            cfg, policy = training_config(p.tenant, req.base_model, rank, lora.seed if lora else None, lora)
            m.config, m.policy = cfg, policy
            m.tc = compat.open_training_client(p.tenant, cfg)
            compat.audit(p.tenant, "tinker_create_model", {"model_id": m.model_id, "base_model": req.base_model},
                         {"model_id": m.model_id, "dp": policy.dp, "policy": policy.source, "rank": rank})
            return T.CreateModelResponse(model_id=m.model_id).model_dump(mode="json")

        e = await run_in_threadpool(start_model, p.tenant, req.session_id, req.model_seq_id, make, "create_model",
                                    req.base_model, rank, ("create", req.session_id, req.model_seq_id), raw)
        return _future_json(e, model_id=f"{req.session_id}:train:{req.model_seq_id}")

    @r.post("/get_info")
    async def get_info(request: Request, p: ApiKeyInfo = Principal) -> dict:
        body, _ = await body_json(request)
        req = parse_json(T.GetInfoRequest, body)
        m = compat.model(p.tenant, req.model_id)
        tok, arch = None, None
        if m.tc is not None:
            sess = m.tc.session
            tok = str(sess.model_path)
            arch = getattr(getattr(sess.model, "config", None), "model_type", None)
        return T.GetInfoResponse(model_id=m.model_id, model_data=T.ModelData(arch=arch, model_name=m.base_model,
                                                                             tokenizer_id=tok),
                                 is_lora=True, lora_rank=m.rank, model_name=m.base_model,
                                 type="get_info").model_dump(mode="json", exclude_none=True)

    def model_op(tenant: str, model_id: str, seq_id: Any, op: str, raw: bytes, fn: Any) -> FutureEntry:
        """Queue ``fn(model)`` on the model's worker, idempotent on (model_id, seq_id)."""
        try:
            m = compat.model(tenant, model_id)
        except Exception as exc:  # noqa: BLE001 - unknown or another tenant's model: a failed future
            from .runtime import failure_of

            return compat.failed(tenant, op, failure_of(exc, op))

        def start(e: FutureEntry) -> None:
            def run() -> Any:
                if m.tc is None:
                    raise StateError(f"model {model_id} is not available (its creation failed or it was closed).")
                return fn(m)

            m.worker.submit(e, run)

        return compat.idempotent(tenant, ("model", model_id, seq_id), raw, op, start)

    # ------------------------------------------------------------------ forward / backward
    def _hf(d: TDatum, *, weighted: bool) -> dict:
        """A datum in the engine's convention: labels aligned with inputs and shifted inside the loss.

        Tinker targets are next-token aligned (target[t] is predicted at input position t), so the input gets
        the last target appended (it only feeds positions after the last prediction: causal) and the labels a
        leading ignore. Every target is then predicted, the last one included.
        """
        labels = [t if (not weighted or w > 0) else IGNORE for t, w in zip(d.targets, d.weights)]
        return {"input_ids": d.tokens + [d.targets[-1]], "labels": [IGNORE] + labels}

    def run_forward_backward(m: CompatModel, datums: list[TDatum], forward_only: bool) -> bytes:
        tc = m.tc
        fr = tc.forward([_hf(d, weighted=False) for d in datums])  # per-token logprobs of every target
        lps = [np.asarray(x, dtype=np.float32) for x in fr.logprobs]
        ws = [np.asarray(d.weights, dtype=np.float32) for d in datums]
        elem = [-(lp * w) for lp, w in zip(lps, ws)]
        metrics = {"loss:sum": float(sum(float(e.sum()) for e in elem)), "examples:sum": float(len(datums)),
                   "tokens:sum": float(sum(float(w.sum()) for w in ws))}
        if forward_only:
            compat.audit(m.tenant, "tinker_forward", {"model_id": m.model_id, "examples": len(datums)},
                         {"model_id": m.model_id, "examples": len(datums)})
        else:
            res = _settle(tc.forward_backward([_hf(d, weighted=True) for d in datums]))
            metrics["loss:sum"] = float(res.loss_sum)
            metrics["clipped:sum"] = float(res.clipped)
        return encode_forward_backward_output({"logprobs": lps, "elementwise_loss": elem}, metrics, len(datums))

    @r.post("/forward_backward")
    async def forward_backward(request: Request, p: ApiKeyInfo = Principal) -> dict:
        raw = await request.body()
        try:
            msg, datums = decode_forward_backward(raw, request.headers.get("content-encoding"))
        except DataError as exc:
            e = compat.failed(p.tenant, "forward_backward", TinkerFailure(str(exc), "user"))
            return _future_json(e)
        op = "forward" if msg.forward_only else "forward_backward"
        if msg.loss_fn != "cross_entropy":
            e = compat.failed(p.tenant, op, TinkerFailure(
                f"loss_fn {msg.loss_fn!r} is not supported by tinker-nb: only 'cross_entropy' (supervised fine-tuning) "
                "runs under per-example DP clipping; RL and custom losses are not available.", "user"))
            return _future_json(e, model_id=msg.model_id)
        if not datums:
            e = compat.failed(p.tenant, op, TinkerFailure(f"{op} needs at least one datum.", "user"))
            return _future_json(e, model_id=msg.model_id)
        fo = bool(msg.forward_only)
        e = await run_in_threadpool(model_op, p.tenant, msg.model_id, msg.seq_id, op, raw,
                                    lambda m: run_forward_backward(m, datums, fo))
        return _future_json(e, model_id=msg.model_id)

    # ------------------------------------------------------------------ optimizer step
    def dp_metrics(m: CompatModel) -> dict[str, float]:
        dm = m.tc.get_dp_metrics()
        if not dm.dp_enabled:
            return {"dp_enabled": 0.0, "steps": float(dm.steps)}
        out = {"dp_enabled": 1.0, "dp_epsilon": float(dm.epsilon_spent), "dp_delta": float(dm.delta),
               "dp_noise_multiplier": float(dm.noise_multiplier), "dp_max_grad_norm": float(dm.max_grad_norm),
               "dp_steps": float(dm.steps),
               # accounting mode (floats only on this wire): participation counting of caller-supplied
               # batches, μ-GDP without amplification; 1.0 = that mode, never Poisson
               "dp_accounting_caller_supplied": 1.0 if dm.sampling == "caller-supplied" else 0.0,
               "dp_amplification": 0.0 if dm.sampling == "caller-supplied" else 1.0,
               # 1.0 only if the accounting's assumptions hold (never for caller-supplied batches: docs/DP.md)
               "dp_accounting_valid": 1.0 if dm.accounting_valid else 0.0}
        if dm.target_epsilon is not None:
            out["dp_target_epsilon"] = float(dm.target_epsilon)
        if dm.epsilon_remaining is not None:
            out["dp_epsilon_remaining"] = float(dm.epsilon_remaining)
        if getattr(dm, "caller_supplied_mu2", None) is not None:
            out["dp_caller_supplied_mu2"] = float(dm.caller_supplied_mu2)
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def run_optim_step(m: CompatModel, adam: Any) -> dict:
        tc = m.tc
        for g in tc.session.optimizer.param_groups:  # per-step Adam hyperparameters, as in Tinker
            g["betas"] = (float(adam.beta1), float(adam.beta2))
            g["eps"] = float(adam.eps)
            g["weight_decay"] = float(adam.weight_decay)
        # grad_clip_norm is not applied: under DP each example is clipped to the policy's C before noise,
        # and no request field can switch that off.
        res = _settle(tc.optim_step(learning_rate=float(adam.learning_rate)))
        metrics = {"step": float(res.step), "examples": float(res.examples), "noise_std": float(res.noise_std),
                   "learning_rate": float(adam.learning_rate), **dp_metrics(m)}
        return T.OptimStepResponse(metrics=metrics).model_dump(mode="json")

    @r.post("/optim_step")
    async def optim_step(request: Request, p: ApiKeyInfo = Principal) -> dict:
        body, raw = await body_json(request)
        req = parse_json(T.OptimStepRequest, body)
        params = req.optim_params
        if not isinstance(params, T.AdamParams):
            e = compat.failed(p.tenant, "optim_step", TinkerFailure("only AdamParams are supported.", "user"))
            return _future_json(e, model_id=req.model_id)
        e = await run_in_threadpool(model_op, p.tenant, req.model_id, req.seq_id, "optim_step", raw,
                                    lambda m: run_optim_step(m, params))
        return _future_json(e, model_id=req.model_id)

    # ------------------------------------------------------------------ checkpoints
    def save(m: CompatModel, kind: str, name: str, *, optimizer: bool) -> tuple[str, str]:
        path = f"tinker://{m.model_id}/{kind}/{name}"
        res = m.tc.save_state(path, include_optimizer=optimizer,
                              metadata={"tinker_path": path, "tinker_model_id": m.model_id, "kind": kind})
        return path, res["artifact_id"]

    @r.post("/save_weights")
    async def save_weights(request: Request, p: ApiKeyInfo = Principal) -> dict:
        body, raw = await body_json(request)
        req = parse_json(T.SaveWeightsRequest, body)

        def run(m: CompatModel) -> dict:
            name = _check_name(req.path or f"step-{m.tc.session.steps}", "checkpoint")
            path, _ = save(m, "weights", name, optimizer=True)
            return T.SaveWeightsResponse(path=path, type="save_weights").model_dump(mode="json")

        e = await run_in_threadpool(model_op, p.tenant, req.model_id, req.seq_id, "save_weights", raw, run)
        return _future_json(e, model_id=req.model_id)

    @r.post("/save_weights_for_sampler")
    async def save_weights_for_sampler(request: Request, p: ApiKeyInfo = Principal) -> dict:
        body, raw = await body_json(request)
        req = parse_json(T.SaveWeightsForSamplerRequest, body)

        def run(m: CompatModel) -> dict:
            if req.path is not None:
                path, _ = save(m, "sampler_weights", _check_name(req.path, "sampler checkpoint"), optimizer=False)
                return {"path": path, "type": "save_weights_for_sampler"}
            name = f"sampler-{req.sampling_session_seq_id}-{secrets.token_hex(4)}"
            path, aid = save(m, "sampler_weights", name, optimizer=False)
            sp = Sampler(f"{m.session_id}:sample:{req.sampling_session_seq_id}:{secrets.token_hex(4)}", m.tenant,
                         m.session_id, m.base_model, path, aid, m.config, new_worker(name))
            compat.register_sampler(sp)
            return {"path": path, "sampling_session_id": sp.sampler_id, "type": "save_weights_for_sampler"}

        e = await run_in_threadpool(model_op, p.tenant, req.model_id, req.seq_id, "save_weights_for_sampler", raw,
                                    run)
        return _future_json(e, model_id=req.model_id)

    def load_into(m: CompatModel, path: str, optimizer: bool) -> dict:
        aid = compat.find_checkpoint(m.tenant, path)
        m.tc.load_state(aid)
        if not optimizer:  # weights only: the optimizer starts fresh, as in Tinker
            m.tc.session.optimizer.state.clear()
        return T.LoadWeightsResponse(path=path, model_id=m.model_id, type="load_weights").model_dump(mode="json")

    @r.post("/load_weights")
    async def load_weights(request: Request, p: ApiKeyInfo = Principal) -> dict:
        body, raw = await body_json(request)
        req = parse_json(T.LoadWeightsRequest, body)
        if req.model_id is not None:  # legacy: load into an existing model
            e = await run_in_threadpool(model_op, p.tenant, req.model_id, req.seq_id, "load_weights", raw,
                                        lambda m: load_into(m, req.path, bool(req.optimizer)))
            return _future_json(e, model_id=req.model_id)
        if req.session_id is None or req.model_seq_id is None:
            raise ConfigError("load_weights needs model_id, or session_id and model_seq_id.")
        compat.session(p.tenant, req.session_id)

        def make(m: CompatModel) -> dict:
            aid = compat.find_checkpoint(p.tenant, req.path)
            ck = compat.checkpoint_config(p.tenant, aid)
            if req.base_model is not None and req.base_model != ck.model_ref:
                raise ConfigError(f"base_model {req.base_model!r} differs from the checkpoint's {ck.model_ref!r}.")
            mods = set(ck.lora_config.target_modules)
            lora = T.LoraConfig(rank=ck.lora_config.rank, train_attn=bool(mods & set(ATTN)),
                                train_mlp=bool(mods & set(MLP)))
            cfg, policy = training_config(p.tenant, ck.model_ref, ck.lora_config.rank, ck.seed, lora)
            if cfg.dp_config != ck.dp_config or cfg.batch_size != ck.batch_size:
                raise ConfigError("this checkpoint was trained under a different DP policy than the tenant's current "
                                  "one; it can be sampled from, but training on needs the same policy.")
            m.base_model, m.rank, m.config, m.policy = ck.model_ref, ck.lora_config.rank, cfg, policy
            m.tc = compat.open_training_client(p.tenant, cfg)
            compat.audit(p.tenant, "tinker_create_model", {"model_id": m.model_id, "from": req.path},
                         {"model_id": m.model_id, "dp": policy.dp, "policy": policy.source, "from_checkpoint": aid})
            return load_into(m, req.path, bool(req.optimizer))

        e = await run_in_threadpool(start_model, p.tenant, req.session_id, req.model_seq_id, make, "load_weights",
                                    "", 0, ("create", req.session_id, req.model_seq_id), raw)
        return _future_json(e, model_id=f"{req.session_id}:train:{req.model_seq_id}")

    # ------------------------------------------------------------------ sampling
    def new_sampler(tenant: str, session_id: str, seq: int, base_model: str | None, model_path: str | None) -> Sampler:
        if model_path is not None:
            aid = compat.find_checkpoint(tenant, model_path)
            cfg = compat.checkpoint_config(tenant, aid)
            base = cfg.model_ref
        else:
            if not base_model:
                raise ConfigError("create_sampling_session needs model_path or base_model.")
            cfg, _ = training_config(tenant, base_model, 1, 0, None)
            aid, base = None, base_model
        sp = Sampler(f"{session_id}:sample:{seq}:{secrets.token_hex(4)}", tenant, session_id, base, model_path, aid,
                     cfg, new_worker(f"s{seq}"))
        compat.register_sampler(sp)
        return sp

    @r.post("/create_sampling_session")
    async def create_sampling_session(request: Request, p: ApiKeyInfo = Principal) -> dict:
        body, _ = await body_json(request)
        req = parse_json(T.CreateSamplingSessionRequest, body)
        compat.session(p.tenant, req.session_id)
        try:
            sp = await run_in_threadpool(new_sampler, p.tenant, req.session_id, req.sampling_session_seq_id,
                                         req.base_model, req.model_path)
        except TinkerError as exc:
            if status_for(error_type(exc)) in (409, 429, 400):  # statuses the SDK would retry for minutes
                raise DataError(f"{type(exc).__name__}: {exc}") from None
            raise
        return T.CreateSamplingSessionResponse(sampling_session_id=sp.sampler_id).model_dump(mode="json")

    @r.get("/samplers/{sampler_id}")
    async def get_sampler(sampler_id: str, p: ApiKeyInfo = Principal) -> dict:
        sp = compat.sampler(p.tenant, sampler_id)
        return {"sampler_id": sp.sampler_id, "base_model": sp.base_model, "model_path": sp.model_path}

    def run_sample(sp: Sampler, req: Any, seq_ids: list[str]) -> bytes:
        from ...engine.generation import generate

        tc = compat.sampler_client(sp)
        ids = model_input_tokens(req.prompt)
        if not ids:
            raise DataError("the prompt has no tokens.")
        sparams = req.sampling_params
        if req.topk_prompt_logprobs or req.topk_sample_logprobs or req.prompt_alt_tokens_k or \
                req.target_prompt_logprobs is not None:
            raise DataError("top-k logprobs, target prompt logprobs and alternative prompt tokens are not supported "
                            "by tinker-nb.")
        sess = tc.session
        stop = sparams.stop
        stop_strs = [stop] if isinstance(stop, str) else [s for s in (stop or []) if isinstance(s, str)]
        stop_ids = {int(s) for s in (stop or []) if isinstance(s, int) and not isinstance(stop, str)}
        max_tokens = int(sparams.max_tokens or 16)
        with sess.inference():
            res = generate(sess.model, sess.tokenizer, ["<tokens>"], max_tokens=max_tokens,
                           temperature=float(sparams.temperature), top_p=float(sparams.top_p),
                           top_k=(int(sparams.top_k) if sparams.top_k and sparams.top_k > 0 else None),
                           stop=stop_strs, seed=sparams.seed, num_samples=int(req.num_samples), device=sess.device,
                           max_positions=sess.max_len, generator=sess.sample_generator,
                           limit_name="the model's maximum positions", encode=lambda _s: ids)
        eos = sess.tokenizer.eos_token_id
        seqs: list[tuple[list[int], list[float] | None, str]] = []
        for s in res.samples:
            toks, reason = list(s.tokens), s.finish_reason
            for i, t in enumerate(toks):
                if t in stop_ids:
                    toks, reason = toks[: i + 1], "stop"
                    break
            else:
                if reason == "stop" and not stop_strs and eos is not None:
                    toks = toks + [int(eos)]  # the stop token is part of the sampled sequence, as in Tinker
            lps = None
            if toks:
                fr = tc.forward([{"input_ids": ids + toks, "labels": [IGNORE] * len(ids) + toks}])
                lps = list(fr.logprobs[0])
            seqs.append((toks, lps, reason))
        prompt_lps = None
        if req.prompt_logprobs:
            if len(ids) > 1:
                fr = tc.forward([{"input_ids": ids, "labels": ids}])
                prompt_lps = [None] + [float(x) for x in fr.logprobs[0]]
            else:
                prompt_lps = [None]
            last_n = req.prompt_logprobs_last_n
            if last_n is not None:
                pad: list[float | None] = [None] * (len(prompt_lps) - last_n)
                prompt_lps = pad + prompt_lps[len(prompt_lps) - last_n:]
        compat.audit(sp.tenant, "tinker_sample", {"sampling_session_id": sp.sampler_id, "samples": len(seqs)},
                     {"sampling_session_id": sp.sampler_id, "model_path": sp.model_path, "samples": len(seqs),
                      "max_tokens": max_tokens, "prompt_logprobs": bool(req.prompt_logprobs)})
        return encode_sample_response(seqs, prompt_lps)

    @r.post("/asample")
    async def asample(request: Request, p: ApiKeyInfo = Principal) -> dict:
        body, raw = await body_json(request)
        req = parse_json(T.SampleRequest, body)
        n = int(req.num_samples)
        if req.sampling_session_id is None:
            e = compat.failed(p.tenant, "sample", TinkerFailure(
                "sample needs a sampling_session_id (create the SamplingClient through the ServiceClient).", "user"))
            return _future_json(e, sample_sequence_ids=[])
        seq_ids = [f"{req.sampling_session_id}:{req.seq_id}:{i}" for i in range(max(n, 0))]
        if not 1 <= n <= 64:
            e = compat.failed(p.tenant, "sample", TinkerFailure("num_samples must be in 1..64.", "user"))
            return _future_json(e, sample_sequence_ids=seq_ids)
        try:
            sp = compat.sampler(p.tenant, req.sampling_session_id)
        except Exception as exc:  # noqa: BLE001
            from .runtime import failure_of

            return _future_json(compat.failed(p.tenant, "sample", failure_of(exc, "sample")),
                                sample_sequence_ids=seq_ids)

        def start(e: FutureEntry) -> None:
            sp.worker.submit(e, lambda: run_sample(sp, req, seq_ids))

        e = await run_in_threadpool(compat.idempotent, p.tenant, ("sample", sp.sampler_id, req.seq_id), raw, "sample",
                                    start)
        return _future_json(e, sample_sequence_ids=seq_ids)

    # ------------------------------------------------------------------ futures
    @r.post("/retrieve_future")
    async def retrieve_future(request: Request, p: ApiKeyInfo = Principal) -> Response:
        body, _ = await body_json(request)
        req = parse_json(T.FutureRetrieveRequest, body)
        e = compat.future(p.tenant, req.request_id)
        if not e.fut.done():
            w = asyncio.wrap_future(e.fut)
            w.add_done_callback(lambda f: f.cancelled() or f.exception())
            await asyncio.wait({w}, timeout=compat.poll_timeout_s)
        if not e.fut.done():
            return JSONResponse({"type": "try_again", "request_id": e.request_id, "queue_state": "active"},
                                status_code=408)
        exc = e.fut.exception()
        if exc is not None:
            f = exc if isinstance(exc, TinkerFailure) else TinkerFailure(str(exc), "server")
            return JSONResponse({"error": f.message, "category": f.category})
        value = e.fut.result()
        if isinstance(value, bytes):
            return Response(value, media_type=PROTO)
        return JSONResponse(value)

    return r
