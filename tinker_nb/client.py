"""The public, Tinker-style API: ``ServiceClient`` and ``TrainingClient``.

``forward_backward`` and ``optim_step`` return futures that run in submission order on one worker
thread; everything else waits for the queue and returns a value. Every state-changing call appends
to the workspace's audit ledger; checkpoints go to the encrypted artifact store.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import TrainingConfig
from .errors import ConfigError, StateError
from .events import EventBus
from .futures import OrderedWorker, TinkerFuture

if TYPE_CHECKING:
    from .engine.session import DPMetrics, ForwardBackwardResult, OptimStepResult

__all__ = ["ServiceClient", "TrainingClient", "SaveResult"]


class SaveResult(dict):
    """What ``save_state`` returns: ``artifact_id``, ``name``, ``step``, ``encryption``, ``content_sha256``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class ServiceClient:
    """Entry point. Holds the workspace (keys, encrypted artifacts, audit ledger) for one tenant.

    Root key: ``passphrase`` (Argon2id), ``key_file``, or the ``TINKER_NB_ROOT_KEY`` environment
    variable; with none of them a random key file is created outside the workspace (see docs/SECURITY.md).
    """

    def __init__(self, workspace: str | os.PathLike | None = None, *, tenant: str = "default",
                 passphrase: str | None = None, key_file: str | os.PathLike | None = None) -> None:
        self.workspace = Path(workspace or os.environ.get("TINKER_NB_WORKSPACE", ".tinker_nb")).resolve()
        if not isinstance(tenant, str) or not tenant.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"tenant must be letters, digits, '-' or '_', got {tenant!r}.")
        self.tenant = tenant
        self.workspace.mkdir(parents=True, exist_ok=True)
        self._passphrase = passphrase
        self._key_file = key_file
        self._keystore = None
        self._store = None
        self._ledger = None
        self._clients: list[weakref.ref] = []

    def __repr__(self) -> str:
        return f"ServiceClient(workspace={str(self.workspace)!r}, tenant={self.tenant!r})"

    # -- lazily opened workspace components (torch-free) ----------------------------------------
    @property
    def keystore(self):
        if self._keystore is None:
            from .security.keys import Keystore

            self._keystore = Keystore.open(self.workspace, passphrase=self._passphrase, key_file=self._key_file)
            if self.tenant not in self._keystore.tenants():
                self._keystore.create_tenant(self.tenant)
        return self._keystore

    @property
    def store(self):
        if self._store is None:
            from .storage import ArtifactStore

            self._store = ArtifactStore(self.workspace, self.keystore, tenant=self.tenant)
        return self._store

    @property
    def ledger(self):
        if self._ledger is None:
            from .ledger import AuditLedger
            from .security.identity import workspace_signer

            self._ledger = AuditLedger(self.workspace / "audit.sqlite", tenant=self.tenant,
                                       signer=workspace_signer(self.workspace, self.keystore))
        return self._ledger

    def publisher_key(self):
        """This workspace's publisher public key: it signs ledger checkpoints and, by default, packages.

        Give it (``.save(path)``) to whoever verifies your packages; they pin it as ``--trust``.
        """
        from .security.identity import workspace_signer

        return workspace_signer(self.workspace, self.keystore).public_key()

    def audit(self, operation: str, params: dict, summary: dict | None = None) -> None:
        """Append one entry to the workspace ledger (digest of params; only the non-secret summary in clear)."""
        self.ledger.append(operation, params, summary=summary or {})

    # -- clients --------------------------------------------------------------------------------
    def create_training_client(self, config: TrainingConfig | None = None, *, noise_seed: int | None = None,
                               **overrides: Any) -> "TrainingClient":
        """Load the model, add LoRA, and return a training client (closes none of the earlier ones)."""
        if config is None:
            config = TrainingConfig(**overrides)
        elif overrides:
            raise ConfigError("pass either a TrainingConfig or keyword settings, not both.")
        if not isinstance(config, TrainingConfig):
            raise ConfigError(f"create_training_client expects a TrainingConfig, got {type(config).__name__}.")
        if config.tenant != self.tenant and config.tenant != "default":
            raise ConfigError(f"config.tenant {config.tenant!r} differs from this ServiceClient's tenant "
                              f"{self.tenant!r}; create a ServiceClient(tenant={config.tenant!r}).")
        tc = TrainingClient(self, config, noise_seed=noise_seed)
        self._clients.append(weakref.ref(tc))
        _registry_set_current(tc)
        return tc

    def list_checkpoints(self) -> list[dict]:
        return [dict(x.to_dict()) if hasattr(x, "to_dict") else dict(x) for x in self.store.list()]

    # -- key lifecycle (audited) ----------------------------------------------------------------
    def rotate_keys(self) -> dict:
        """New primary KEK for this tenant; every checkpoint's DEK is rewrapped (data is not re-encrypted).

        Appended to the audit ledger (versions and counts only) and followed by a signed ledger checkpoint.
        """
        res = self.store.rotate()
        self.audit("rotate_keys", {"tenant": self.tenant, "primary_version": res["primary_version"]},
                   {"primary_version": res["primary_version"], "rewrapped": res["rewrapped"]})
        self.ledger.checkpoint()
        return res

    def shred_tenant(self, *, confirm: str) -> dict:
        """Crypto-shredding: destroy every KEK of this tenant, so all its checkpoints become unrecoverable.

        Irreversible (right to erasure): pass ``confirm=<tenant name>``. Backups of ``keystore.json`` made
        before this call still hold the KEKs under the workspace root key; see docs/SECURITY.md.
        """
        if confirm != self.tenant:
            raise ConfigError(f"shredding is irreversible: pass confirm={self.tenant!r} to destroy tenant "
                              f"{self.tenant!r}'s keys.")
        artifacts = len(self.store.list())
        self.keystore.destroy_tenant(self.tenant)
        self.audit("shred_tenant", {"tenant": self.tenant}, {"artifacts_unrecoverable": artifacts})
        self.ledger.checkpoint()
        return {"tenant": self.tenant, "destroyed": True, "artifacts_unrecoverable": artifacts}


_CURRENT: weakref.ref | None = None


def _registry_set_current(tc: "TrainingClient") -> None:
    global _CURRENT
    _CURRENT = weakref.ref(tc)


def current_training_client() -> "TrainingClient | None":
    """The most recently created open training client (used by the ``%tinker`` magics)."""
    tc = _CURRENT() if _CURRENT else None
    return tc if tc is not None and not tc.closed else None


class TrainingClient:
    """DP-SGD LoRA training of one model in this kernel, with the Tinker primitives."""

    def __init__(self, service: ServiceClient, config: TrainingConfig, *, noise_seed: int | None = None) -> None:
        from .engine.session import TrainingSession

        self.service = service
        self.config = config
        self.events = EventBus()
        self._worker = OrderedWorker("tinker-nb", on_interrupt=self._on_interrupt)
        try:
            self._session = TrainingSession(config, events=self.events, audit=self._audit, noise_seed=noise_seed)
        except BaseException:
            self._worker.shutdown()
            raise
        self.closed = False

    def __repr__(self) -> str:
        s = self._session
        dp = f"σ={s.sigma:.3g}, C={s.dp.max_grad_norm:g}" if s.dp and s.sigma else ("DP" if s.dp else "no DP")
        return (f"TrainingClient(model={self.config.model_ref!r}, rank={self.config.lora_config.rank}, {dp}, "
                f"steps={s.steps}{', closed' if self.closed else ''})")

    # -- plumbing ---------------------------------------------------------------------------------
    def _audit(self, op: str, params: dict, summary: dict) -> None:
        self.service.audit(op, params, summary)
        self.events.publish("audit", {"operation": op})

    def _on_interrupt(self, op: str) -> None:
        self.events.publish("interrupt", {"operation": op, "step": self._session.steps})

    @property
    def session(self):
        """The torch-side session (advanced use: model, tokenizer, history)."""
        return self._session

    # -- data ---------------------------------------------------------------------------------------
    def attach_dataset(self, records: Sequence[Any]) -> dict[str, Any]:
        """Hold the private data set (strings or tokenised dicts); the library then draws Poisson batches."""
        return self._worker.call("attach_dataset", self._session.attach_dataset, records)

    def poisson_batches(self, *, epochs: float | None = None, steps: int | None = None) -> Iterator[dict]:
        """Poisson-sampled batches (rate batch_size/N); an empty one means a noise-only step."""
        self._worker.drain()
        return self._session.poisson_batches(epochs=epochs, steps=steps)

    def planned_steps(self, epochs: float | None = None) -> int:
        return self._session.planned_steps(epochs)

    # -- Tinker primitives --------------------------------------------------------------------------
    def forward_backward(self, batch: Any) -> TinkerFuture["ForwardBackwardResult"]:
        """Queue loss + backward + per-example clipping; ``.result()`` gives loss, counts and clip stats."""
        return self._worker.submit("forward_backward", self._session.forward_backward, batch)

    def optim_step(self, *, learning_rate: float | None = None) -> TinkerFuture["OptimStepResult"]:
        """Queue the noisy optimizer step (refused with BudgetExceededError past target_epsilon)."""
        return self._worker.submit("optim_step", self._session.optim_step, learning_rate=learning_rate)

    def sample(self, prompts: str | Sequence[str], *, max_tokens: int = 32, temperature: float = 0.0,
               top_p: float = 1.0, top_k: int | None = None, stop: str | Sequence[str] | None = None,
               seed: int | None = None, num_samples: int = 1):
        """Generate completions (temperature 0 = greedy, deterministic)."""
        return self._worker.call("sample", self._session.sample, prompts, max_tokens=max_tokens,
                                 temperature=temperature, top_p=top_p, top_k=top_k, stop=stop, seed=seed,
                                 num_samples=num_samples)

    def get_dp_metrics(self) -> "DPMetrics":
        """ε spent (PLD/PRV), ε remaining, δ, steps, σ, C, q, accountant, sampling provenance."""
        return self._worker.call("get_dp_metrics", self._session.dp_metrics)

    def metrics_history(self) -> list[dict]:
        self._worker.drain()
        return list(self._session.metrics_history)

    # -- checkpoints ----------------------------------------------------------------------------------
    def save_state(self, name: str, *, include_optimizer: bool = True, metadata: dict | None = None) -> SaveResult:
        """Encrypt and store weights, optimizer, RNG and accountant state; returns the artifact id."""
        from .engine.checkpoint import session_to_blobs

        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ConfigError("save_state needs a non-empty name of at most 200 characters.")
        if metadata is not None and not isinstance(metadata, dict):
            raise ConfigError("metadata must be a dict of JSON values.")
        import json

        try:
            json.dumps(metadata or {})
        except (TypeError, ValueError):
            raise ConfigError("metadata must be JSON-serialisable (strings, numbers, lists, dicts).") from None

        def run():
            s = self._session
            s._check_open()
            blobs = session_to_blobs(s, include_optimizer=include_optimizer)
            meta = {"user": metadata or {}, "step": s.steps, "model_ref": self.config.model_ref,
                    "kind": "training-state", "include_optimizer": include_optimizer}
            info = self.service.store.save(name, blobs, metadata=meta,
                                           public={"step": s.steps, "kind": "training-state"})
            info = info.to_dict() if hasattr(info, "to_dict") else dict(info)
            self.service.audit("save_state", {"artifact_id": info["artifact_id"], "name": name},
                               {"artifact_id": info["artifact_id"], "step": s.steps,
                                "content_sha256": info.get("content_sha256")})
            try:
                self.service.ledger.checkpoint()
            except Exception as exc:  # noqa: BLE001 - the state is saved; say that the ledger checkpoint is not
                warnings.warn(f"checkpoint {info['artifact_id']} is saved, but signing the audit ledger checkpoint "
                              f"failed ({type(exc).__name__}: {exc}); run tc.audit_log().checkpoint() to retry.",
                              RuntimeWarning, stacklevel=2)
            res = SaveResult(info, name=name, step=s.steps)
            self.events.publish("save", dict(res))
            return res

        return self._worker.call("save_state", run)

    def load_state(self, artifact_id: str) -> dict:
        """Verify and decrypt a checkpoint, then restore it (refused checkpoints change nothing)."""
        from .engine.checkpoint import restore_session

        def run():
            s = self._session
            s._check_open()
            blobs, meta, info = self.service.store.load(artifact_id)
            state = restore_session(s, blobs)
            self.service.audit("load_state", {"artifact_id": artifact_id}, {"artifact_id": artifact_id,
                                                                             "step": s.steps})
            out = {"artifact_id": artifact_id, "step": state["step"]}
            self.events.publish("load", out)
            return out

        return self._worker.call("load_state", run)

    def list_checkpoints(self) -> list[dict]:
        return self.service.list_checkpoints()

    # -- audit, packaging, widgets ------------------------------------------------------------------
    def audit_log(self):
        """The workspace's audit ledger (``.verify()``, ``.to_pandas()``, proofs)."""
        self._worker.drain()
        return self.service.ledger

    def package(self, path: str | os.PathLike, *, recipients: Sequence[Any], signer: Any = None,
                expires_in_days: float = 365.0, **kwargs: Any):
        """Build a signed TGSP package of the current adapter for ``recipients``."""
        from .tgsp.session import package_session

        return self._worker.call("package", package_session, self, path, recipients=recipients, signer=signer,
                                 expires_in_days=expires_in_days, **kwargs)

    def dashboard(self, **kwargs: Any):
        """A live anywidget dashboard bound to this client's events (plain text outside a notebook)."""
        from .notebook.dashboard import Dashboard

        return Dashboard.for_client(self, **kwargs)

    # -- lifecycle --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Finish queued work, remove the per-sample hooks, release the worker. Idempotent."""
        if self.closed:
            return
        try:
            self._worker.drain()
        finally:
            self._session.close()
            self._worker.shutdown()
            self.events.clear()
            self.closed = True

    def __enter__(self) -> "TrainingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # notebook re-runs: drop hooks of clients that went out of scope
        try:
            if not self.closed:
                self._session.acc.close()
        except Exception:  # noqa: BLE001
            pass
