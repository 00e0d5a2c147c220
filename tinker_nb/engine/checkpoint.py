"""Serialise a training session to safetensors + JSON blobs and back (no pickle anywhere).

Blobs: ``adapter.safetensors`` (LoRA weights), ``optimizer.safetensors`` (AdamW moments and step
counts, optional), ``rng.safetensors`` (torch CPU RNG, noise and sampler generator states),
``accumulator.safetensors`` (a partially accumulated step, if any) and ``state.json`` (step, accountant
history, σ, sampling provenance, config, data set digest, metrics history). The encrypted store seals them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as st_load, save as st_save

from ..config import TrainingConfig
from ..errors import ConfigError, IntegrityError, StateError

if TYPE_CHECKING:
    from .session import TrainingSession

__all__ = ["session_to_blobs", "restore_session", "CHECKPOINT_KIND"]

CHECKPOINT_KIND = "tinker-nb/training-state/v1"


def _trainable(session: "TrainingSession") -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in session.model.named_parameters() if p.requires_grad]


def session_to_blobs(session: "TrainingSession", *, include_optimizer: bool) -> dict[str, bytes]:
    """Snapshot everything needed to continue bit-for-bit: weights, optimizer, RNGs, accountant."""
    named = _trainable(session)
    blobs: dict[str, bytes] = {
        "adapter.safetensors": st_save({n: p.detach().cpu().contiguous() for n, p in named}),
    }
    if include_optimizer:
        opt_t: dict[str, torch.Tensor] = {}
        for i, (_, p) in enumerate(named):
            st = session.optimizer.state.get(p, {})
            for k, v in st.items():
                t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
                opt_t[f"{i}.{k}"] = t.detach().cpu().contiguous()
        blobs["optimizer.safetensors"] = st_save(opt_t) if opt_t else st_save({"_empty": torch.zeros(0)})
    rng = {"torch_cpu": torch.get_rng_state(), "noise": session.noise_generator.get_state().cpu()}
    if session.sampler is not None:
        rng["sampler"] = session.sampler.generator.get_state()
    if session.device.type == "cuda":
        rng["torch_cuda"] = torch.cuda.get_rng_state(session.device)
    blobs["rng.safetensors"] = st_save(rng)
    if session.acc.examples:
        blobs["accumulator.safetensors"] = st_save({str(i): s.cpu().contiguous() for i, s in enumerate(session.acc.sums)})
    state = {
        "kind": CHECKPOINT_KIND,
        "config": session.config.to_dict(),
        "trainable": [n for n, _ in named],
        "step": session.steps,
        "sigma": session.sigma,
        "history": [list(h) for h in session.history],
        "max_steps": session.max_steps,
        "sampling_sources": sorted(session.sampling_sources),
        "noise_seed_fixed": session.noise_seed_fixed,
        "dataset_sha256": session.dataset_digest,
        "dataset_size": len(session.examples) if session.examples else None,
        "sampler_draws": session.sampler.draws if session.sampler else 0,
        "pending": {"draw": session._pending_draw, "tokens": session._pending_tokens,
                    "loss": session._pending_loss, "examples": session.acc.examples, "calls": session.acc.calls},
        "optimizer": {"included": include_optimizer,
                      "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                       for g in session.optimizer.param_groups]},
        "metrics_history": session.metrics_history[-2000:],
        "first_step_checked": session._first_step_checked,
        "warned": session._warned,
    }
    blobs["state.json"] = json.dumps(state, sort_keys=True, default=float).encode()
    return blobs


def read_state(blobs: dict[str, bytes]) -> dict[str, Any]:
    try:
        state = json.loads(blobs["state.json"])
    except (KeyError, ValueError):
        raise IntegrityError("checkpoint has no readable state.json; it was not written by save_state.") from None
    if state.get("kind") != CHECKPOINT_KIND:
        raise IntegrityError(f"checkpoint kind {state.get('kind')!r} is not {CHECKPOINT_KIND!r}.")
    return state


def check_compatible(session: "TrainingSession", state: dict[str, Any]) -> None:
    """Refuse (before changing anything) a checkpoint from another model, adapter shape or data set."""
    theirs = TrainingConfig.from_dict(state["config"])
    mine = session.config
    for attr in ("model_ref", "lora_config", "dp_config", "batch_size"):
        if getattr(theirs, attr) != getattr(mine, attr):
            raise ConfigError(f"checkpoint was saved with a different {attr} ({getattr(theirs, attr)!r}); create the "
                              f"client with the same TrainingConfig before load_state.")
    names = [n for n, _ in _trainable(session)]
    if names != state["trainable"]:
        raise ConfigError("checkpoint's adapter parameters do not match this model's LoRA layers.")
    if state.get("dataset_sha256") and session.dataset_digest and state["dataset_sha256"] != session.dataset_digest:
        raise ConfigError("checkpoint was trained on a different data set (digest differs); attach the same records.")
    if state.get("dataset_sha256") and session.examples is None and session.dp is not None:
        raise StateError("attach_dataset(records) with the same records before load_state, so sampling and "
                         "accounting continue correctly.")


def restore_session(session: "TrainingSession", blobs: dict[str, bytes]) -> dict[str, Any]:
    """Load a snapshot into ``session`` (checked first; on a refused checkpoint nothing changes)."""
    state = read_state(blobs)
    check_compatible(session, state)
    adapter = st_load(blobs["adapter.safetensors"])
    named = _trainable(session)
    for n, p in named:
        if n not in adapter or adapter[n].shape != p.shape:
            raise IntegrityError(f"adapter tensor {n!r} is missing or has the wrong shape in the checkpoint.")
    rng = st_load(blobs["rng.safetensors"])
    opt = st_load(blobs["optimizer.safetensors"]) if "optimizer.safetensors" in blobs else None
    accum = st_load(blobs["accumulator.safetensors"]) if "accumulator.safetensors" in blobs else None
    # -- all parsed and checked: apply
    with torch.no_grad():
        for n, p in named:
            p.copy_(adapter[n].to(p.device, p.dtype))
    if opt is not None:
        session.optimizer.state.clear()
        for i, (_, p) in enumerate(named):
            st = {k.split(".", 1)[1]: v.to(p.device) if k.split(".", 1)[1] != "step" else v
                  for k, v in opt.items() if k.split(".", 1)[0] == str(i)}
            if st:
                session.optimizer.state[p] = st
        for g, saved in zip(session.optimizer.param_groups, state["optimizer"]["param_groups"]):
            g.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items()})
    torch.set_rng_state(rng["torch_cpu"])
    session.noise_generator.set_state(rng["noise"].to(session.noise_generator.device)
                                      if session.device.type != "cuda" else rng["noise"])
    if "torch_cuda" in rng and session.device.type == "cuda":
        torch.cuda.set_rng_state(rng["torch_cuda"], session.device)
    if session.sampler is not None and "sampler" in rng:
        session.sampler.generator.set_state(rng["sampler"])
        session.sampler.draws = int(state["sampler_draws"])
    session.acc.reset()
    if accum is not None:
        for i, s in enumerate(session.acc.sums):
            s.copy_(accum[str(i)].to(s.device))
    pend = state["pending"]
    session.acc.examples = int(pend["examples"])
    session.acc.calls = int(pend["calls"])
    session._pending_draw = pend["draw"]
    session._pending_tokens = int(pend["tokens"])
    session._pending_loss = float(pend["loss"])
    session.steps = int(state["step"])
    session.sigma = state["sigma"]
    session.history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
    session.max_steps = state["max_steps"]
    session.sampling_sources = set(state["sampling_sources"])
    session.noise_seed_fixed = bool(state["noise_seed_fixed"]) or session.noise_seed_fixed
    session.metrics_history = list(state["metrics_history"])
    session._first_step_checked = bool(state["first_step_checked"])
    session._warned = bool(state["warned"])
    session._eps_cache = None
    if session.live is not None:
        session.live.steps = sum(n for _, _, n in session.history)
    return state
