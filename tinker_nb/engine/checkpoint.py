"""Serialise a training session to safetensors + JSON blobs and back (no pickle anywhere).

Blobs: ``adapter.safetensors`` (LoRA weights), ``optimizer.safetensors`` (AdamW moments and step
counts, optional) and ``state.json`` (the run record, :mod:`tinker_nb.run_record`). The encrypted store
seals them.

What a checkpoint never holds, on purpose: the state of any random generator (noise and sampling keys
live only in memory), a pending un-noised gradient sum, or anything that ``load_state`` could use to
lower ε or rewind the step count. ``load_state`` restores weights and optimizer state only; the
privacy odometer of the workspace keeps every step ever charged.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import run_record
from ..config import TrainingConfig
from ..errors import ConfigError, IntegrityError, StateError
from ..privacy import CALLER_POOL

if TYPE_CHECKING:
    from .session import TrainingSession

__all__ = ["CHECKPOINT_KIND", "restore_session", "session_to_blobs"]

CHECKPOINT_KIND = run_record.CHECKPOINT_KIND


def _trainable(session: TrainingSession) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in session.model.named_parameters() if p.requires_grad]


def session_to_blobs(session: TrainingSession, *, include_optimizer: bool) -> dict[str, bytes]:
    """Weights, optimizer moments and the run record. Refused while a step is being accumulated."""
    if session.accountant.pending is not None or session.acc.examples:
        raise StateError("a step is being accumulated (forward_backward without optim_step); call optim_step() "
                         "first — a checkpoint never holds an un-noised gradient sum.")
    session.accountant.odometer.flush()  # the charges behind these weights are on disk before the weights are
    named = _trainable(session)
    blobs: dict[str, bytes] = {
        "adapter.safetensors": st_save({n: p.detach().cpu().contiguous() for n, p in named}),
    }
    groups = None
    if include_optimizer:
        opt_t: dict[str, torch.Tensor] = {}
        for i, (_, p) in enumerate(named):
            st = session.optimizer.state.get(p, {})
            for k, v in st.items():
                t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
                opt_t[f"{i}.{k}"] = t.detach().cpu().contiguous()
        blobs["optimizer.safetensors"] = st_save(opt_t) if opt_t else st_save({"_empty": torch.zeros(0)})
        groups = [{k: v for k, v in g.items() if k != "params"} for g in session.optimizer.param_groups]
    state = run_record.build_state(
        config=session.config.to_dict(), trainable=[n for n, _ in named], step=session.steps,
        privacy=session.privacy_record(), data=session.source.state_dict() if session.source else None,
        optimizer_groups=groups, metrics_history=session.metrics_history)
    blobs["state.json"] = json.dumps(state, sort_keys=True, default=float).encode()
    return blobs


def read_state(blobs: dict[str, bytes]) -> dict[str, Any]:
    return run_record.read_state(blobs)


def check_compatible(session: TrainingSession, state: dict[str, Any]) -> None:
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
    if session.dp is None:
        return
    theirs_ds = state.get("dataset_sha256")
    mine_ds = session.dataset_digest
    if theirs_ds and mine_ds is None:
        raise StateError("attach_dataset(records) with the same records before load_state, so that the data "
                         "set's privacy budget covers the loaded weights.")
    same_pool = state.get("pool") is not None and state.get("pool") == session.accountant.pool  # same records
    if theirs_ds and mine_ds and theirs_ds != mine_ds and not same_pool:
        raise ConfigError("checkpoint was trained on a different data set (digest differs); attach the same records.")
    if not theirs_ds and state.get("pool") == CALLER_POOL and mine_ds is not None:
        raise ConfigError("checkpoint was trained on caller-supplied batches; load it into a client without an "
                          "attached data set, whose caller-supplied budget covers those steps.")


def restore_session(session: TrainingSession, blobs: dict[str, bytes]) -> dict[str, Any]:
    """Load weights (and optimizer state) into ``session``; checked first, so a refused one changes nothing.

    Never restores ε, the step count or any randomness.
    """
    if session.accountant.pending is not None or session.acc.examples:
        raise StateError("a step is being accumulated; call optim_step() before load_state.")
    state = read_state(blobs)
    check_compatible(session, state)
    try:
        adapter = st_load(blobs["adapter.safetensors"])
        opt = st_load(blobs["optimizer.safetensors"]) if "optimizer.safetensors" in blobs else None
    except Exception:  # noqa: BLE001 - safetensors raises its own error types
        raise IntegrityError("checkpoint tensors are not readable safetensors.") from None
    named = _trainable(session)
    for n, p in named:
        if n not in adapter or adapter[n].shape != p.shape:
            raise IntegrityError(f"adapter tensor {n!r} is missing or has the wrong shape in the checkpoint.")
    # -- all parsed and checked: apply
    with torch.no_grad():
        for n, p in named:
            p.copy_(adapter[n].to(p.device, p.dtype))
    if opt is not None and state.get("optimizer", {}).get("included", True):
        session.optimizer.state.clear()
        for i, (_, p) in enumerate(named):
            st = {k.split(".", 1)[1]: v.to(p.device) if k.split(".", 1)[1] != "step" else v
                  for k, v in opt.items() if k.split(".", 1)[0] == str(i)}
            if st:
                session.optimizer.state[p] = st
        for g, saved in zip(session.optimizer.param_groups, state["optimizer"]["param_groups"]):
            g.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items()})
    session.acc.reset()
    session.accountant.adopt_checkpoint(state)  # what the weights were trained on counts for this client now
    return state
