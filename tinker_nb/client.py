"""The public, Tinker-style API: ``ServiceClient`` and ``TrainingClient``.

``forward_backward`` and ``optim_step`` return futures that run in submission order on one worker
thread, with bounded queueing (tinker_nb/futures.py); everything else waits for the queue and returns
a value. Every state-changing call appends to the workspace's audit ledger; checkpoints go to the
encrypted artifact store; every DP step is charged to the data set's privacy odometer.

``ServiceClient(base_url=..., api_key=...)`` (or ``$TINKER_NB_BASE_URL``) gives the same API against a
``tinker-nb serve`` server (tinker_nb/remote/).
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .config import TrainingConfig
from .errors import ConfigError, StateError
from .events import EventBus
from .futures import OrderedWorker, TinkerFuture
from .types import DatasetInfo, LoadResult, PackageManifest, SaveResult
from .workspace import Workspace, validate_tenant

if TYPE_CHECKING:
    from .engine.data_source import Draw
    from .types import DPMetrics, ForwardBackwardResult, ForwardResult, OptimStepResult

__all__ = ["LoadResult", "SaveResult", "ServiceClient", "TrainingClient"]


def _wants_remote(workspace: Any, base_url: str | None) -> bool:
    if base_url is not None:
        return True
    return workspace is None and bool(os.environ.get("TINKER_NB_BASE_URL"))


class ServiceClient:
    """Entry point: one tenant of a :class:`~tinker_nb.workspace.Workspace` (keys, checkpoints, ledger, budgets).

    ``ServiceClient(workspace=None, tenant="default")`` works in this kernel; ``workspace`` is a path
    (default ``$TINKER_NB_WORKSPACE`` or ``./.tinker_nb``) or a :class:`Workspace`. Root key: ``passphrase``
    (Argon2id), ``key_file``, or ``$TINKER_NB_ROOT_KEY``; with none a random key file is created outside
    the workspace (docs/SECURITY.md). ``tenant_secret`` gives a tenant a secret of its own (its keys then
    need the root key and that secret); ``recreate_tenant=True`` re-creates a crypto-shredded tenant name
    (empty). ``ServiceClient(base_url=..., api_key=...)`` talks to a server.
    """

    def __new__(cls, workspace: Any = None, *args: Any, base_url: str | None = None, **kwargs: Any) -> Any:
        if cls is ServiceClient and _wants_remote(workspace, base_url):
            from .remote import RemoteServiceClient

            return super().__new__(RemoteServiceClient)
        return super().__new__(cls)

    def __init__(self, workspace: str | os.PathLike | Workspace | None = None, *, tenant: str | None = "default",
                 passphrase: str | None = None, key_file: str | os.PathLike | None = None,
                 tenant_secret: str | bytes | None = None, recreate_tenant: bool = False,
                 base_url: str | None = None, api_key: str | None = None) -> None:
        if base_url is not None or api_key is not None:
            raise ConfigError("base_url/api_key select a remote server; do not combine them with a local workspace.")
        if isinstance(workspace, Workspace):
            if passphrase is not None or key_file is not None:
                raise ConfigError("the Workspace already holds its root key settings; pass passphrase/key_file to "
                                  "Workspace(...), not to ServiceClient.")
            self._ws = workspace
        else:
            self._ws = Workspace(workspace, passphrase=passphrase, key_file=key_file)
        self.tenant = validate_tenant("default" if tenant is None else tenant)
        self._tenant = self._ws.tenant(self.tenant, secret=tenant_secret, recreate=recreate_tenant)
        self._clients: list[weakref.ref] = []

    def __repr__(self) -> str:
        return f"ServiceClient(workspace={str(self._ws.path)!r}, tenant={self.tenant!r})"

    # -- the workspace's components for this tenant (torch-free, opened lazily) ------------------
    @property
    def workspace(self) -> Workspace:
        """The :class:`Workspace` (path-like: ``service.workspace / "audit.sqlite"``)."""
        return self._ws

    @property
    def keystore(self):
        return self._tenant.keystore

    @property
    def store(self):
        return self._tenant.store

    @property
    def ledger(self):
        return self._tenant.ledger

    @property
    def odometer(self):
        return self._ws.odometer

    def publisher_key(self):
        """This workspace's publisher public key: it signs ledger checkpoints and, by default, packages.

        Give it (``.save(path)``) to whoever verifies your packages; they pin it as ``--trust``.
        """
        return self._ws.signer.public_key()

    def audit(self, operation: str, params: dict, summary: dict | None = None) -> None:
        """Append one entry to the workspace ledger (digest of params; only the non-secret summary in clear)."""
        self._tenant.audit(operation, params, summary)

    def privacy_budgets(self) -> list[dict]:
        """Every data set (pool) this tenant has charged, once each, with its steps and the composition spent.

        A pool whose charges were carried over to a data set's current pool (it was named the older,
        order-sensitive way) is not listed on its own: it is part of that pool, which names it in
        ``carried_over_from``. Each data set is one row, so the rows never count a charge twice.
        """
        odometer = self.odometer
        out = []
        for pool in odometer.pools(self.tenant):
            if odometer.successors(self.tenant, pool):
                continue  # held in full by its successor
            comp = odometer.composition(self.tenant, pool)
            out.append({"pool": pool, "steps": comp.steps, **comp.to_dict(),
                        "carried_over_from": odometer.predecessors(self.tenant, pool)})
        return out

    # -- clients --------------------------------------------------------------------------------
    def create_training_client(self, config: TrainingConfig | None = None, *, noise_seed: int | None = None,
                               **overrides: Any) -> TrainingClient:
        """Load the model, add LoRA, and return a training client (closes none of the earlier ones)."""
        if config is None:
            import dataclasses

            known = {f.name for f in dataclasses.fields(TrainingConfig)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise ConfigError(f"unknown TrainingConfig setting {unknown[0]!r}; the settings are: "
                                  f"{', '.join(sorted(known))}.")
            config = TrainingConfig(**overrides)
        elif overrides:
            raise ConfigError("pass either a TrainingConfig or keyword settings, not both.")
        if not isinstance(config, TrainingConfig):
            raise ConfigError(f"create_training_client expects a TrainingConfig, got {type(config).__name__}.")
        if config.tenant is not None and config.tenant != self.tenant:
            raise ConfigError(f"config.tenant {config.tenant!r} differs from this ServiceClient's tenant "
                              f"{self.tenant!r}; create a ServiceClient(tenant={config.tenant!r}).")
        if noise_seed is not None and (isinstance(noise_seed, bool) or not isinstance(noise_seed, int)
                                       or noise_seed < 0):
            raise ConfigError(f"noise_seed must be a non-negative integer (tests only), got {noise_seed!r}.")
        tc = TrainingClient(self, config, noise_seed=noise_seed)
        self._clients.append(weakref.ref(tc))
        return tc

    def training_clients(self) -> list[TrainingClient]:
        """The open training clients this ServiceClient created, oldest first."""
        out = [r() for r in self._clients]
        return [tc for tc in out if tc is not None and not tc.closed]

    def list_checkpoints(self) -> list[dict]:
        """This tenant's training checkpoints (other artifacts, such as a server's uploaded data sets, are not)."""
        out = []
        for x in self.store.list():
            d = dict(x.to_dict()) if hasattr(x, "to_dict") else dict(x)
            if (d.get("public") or {}).get("kind", "training-state") == "training-state":
                out.append(d)
        return out

    def collect_garbage(self, *, older_than_s: float = 3600.0) -> Any:
        """Reconcile this tenant's checkpoint files, index and ledger after a crash; returns what was done."""
        return self._tenant.collect_garbage(older_than_s=older_than_s)

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

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        for tc in self.training_clients():
            tc.close()


class TrainingClient:
    """DP-SGD LoRA training of one model in this kernel, with the Tinker primitives."""

    #: How many operations may wait or run at once (a step is two: forward_backward and optim_step).
    MAX_IN_FLIGHT = 4

    def __init__(self, service: ServiceClient, config: TrainingConfig, *, noise_seed: int | None = None) -> None:
        import copy
        import time

        from .engine.session import TrainingSession

        self.service = service
        self.config = copy.deepcopy(config)  # a private copy: later changes to the caller's objects change nothing
        self.events = EventBus()
        self.created_at = time.time()
        self.closed = False
        self._worker = OrderedWorker("tinker-nb", on_interrupt=self._on_interrupt, max_in_flight=self.MAX_IN_FLIGHT)
        try:
            self._session = TrainingSession(self.config, events=self.events, audit=self._audit, noise_seed=noise_seed,
                                            odometer=service.odometer, tenant=service.tenant)
        except BaseException:
            self._worker.shutdown()
            raise

    def __repr__(self) -> str:
        s = self._session
        dp = f"σ={s.sigma:.3g}, C={s.dp.max_grad_norm:g}" if s.dp and s.sigma else ("DP" if s.dp else "no DP")
        return (f"TrainingClient(model={self.config.model_ref!r}, rank={self.config.lora_config.rank}, {dp}, "
                f"steps={s.steps}{', closed' if self.closed else ''})")

    # -- plumbing ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise StateError("this training client is closed; create a new one with service.create_training_client().")

    def _audit(self, op: str, params: dict, summary: dict) -> None:
        self.service.audit(op, params, summary)
        self.events.publish("audit", {"operation": op})

    def _on_interrupt(self, info: dict) -> None:
        """Ctrl-C / the stop button: queued operations are already cancelled; report, and leave a clean client.

        A step whose forward_backward ran but whose optim_step was cancelled is dropped once the running
        operation finishes (its draw's charge stands: it was sampled); nothing else is pending afterwards.
        """
        s = self._session

        def settle() -> None:
            dropped = s.abandon_pending_step()
            payload = {**info, "step": s.steps, "epsilon": s.accountant.live_epsilon(), "dropped_pending": dropped,
                       "message": (f"interrupted: {s.steps} steps ran; {len(info.get('cancelled', []))} queued "
                                   "operations were cancelled and never ran (their draws were never sampled)"
                                   + ("; the step in progress was dropped before release" if dropped else "")
                                   + ".")}
            self.events.publish("interrupt", payload)

        self._worker.run_after(settle)

    @property
    def session(self):
        """The torch-side session (advanced use: model, tokenizer)."""
        return self._session

    @property
    def tokenizer(self):
        """The model's tokenizer (Hugging Face)."""
        return self._session.tokenizer

    def get_tokenizer(self):
        """The model's tokenizer, as in Tinker."""
        return self._session.tokenizer

    # -- data ---------------------------------------------------------------------------------------
    def attach_dataset(self, records: Any, *, charge_also: Any = None) -> dict[str, Any]:
        """Hold the private data set; the library then draws Poisson batches and charges its budget.

        Records: strings, ``{"prompt", "completion"}`` or ``{"messages": [...]}`` dicts, tokenised dicts, a
        pandas Series/DataFrame, a JSONL/CSV/TXT path or a Hugging Face ``datasets`` object.
        ``charge_also``: records contained in ``records`` whose own data-set budget every step charges too
        (e.g. your data inside a privacy-audit run that adds canaries).
        """
        self._check_open()
        return DatasetInfo(self._worker.call("attach_dataset", self._session.attach_dataset, records,
                                             charge_also=charge_also))

    def poisson_batches(self, *, epochs: float | None = None, steps: int | None = None) -> Iterator[Draw]:
        """Draw handles for ``steps`` steps (or ``epochs`` expected passes); pass each to forward_backward once.

        Each handle's records are sampled (each joins with rate batch_size/N) when the engine trains on
        it; an empty draw means a noise-only step. A new loop drops the unused handles of the last one.
        """
        self._check_open()
        self._worker.drain()
        return self._session.poisson_batches(epochs=epochs, steps=steps)

    def planned_steps(self, epochs: float | None = None) -> int:
        self._check_open()
        return self._session.planned_steps(epochs)

    # -- Tinker primitives --------------------------------------------------------------------------
    def forward_backward(self, batch: Any) -> TinkerFuture[ForwardBackwardResult]:
        """Queue loss + backward + per-example clipping; ``.result()`` gives loss, counts and clip stats.

        ``batch`` is a draw of ``poisson_batches()`` (used once) or your own batch (accounted by
        participation count without amplification: see docs/DP.md).
        """
        self._check_open()
        return self._worker.submit("forward_backward", self._session.forward_backward, batch)

    def forward(self, batch: Any) -> ForwardResult:
        """Per-example summed loss and per-token log-probabilities; no gradients, pending step untouched."""
        self._check_open()
        return self._worker.call("forward", self._session.forward, batch)

    def optim_step(self, *, learning_rate: float | None = None) -> TinkerFuture[OptimStepResult]:
        """Queue the noisy optimizer step of the pending draw (noise once, normalised by the expected batch)."""
        self._check_open()
        return self._worker.submit("optim_step", self._session.optim_step, learning_rate=learning_rate)

    def sample(self, prompts: str | Sequence[str], *, max_tokens: int = 32, temperature: float = 0.0,
               top_p: float = 1.0, top_k: int | None = None, stop: str | Sequence[str] | None = None,
               seed: int | None = None, num_samples: int = 1):
        """Generate completions (temperature 0 = greedy, deterministic)."""
        self._check_open()
        return self._worker.call("sample", self._session.sample, prompts, max_tokens=max_tokens,
                                 temperature=temperature, top_p=top_p, top_k=top_k, stop=stop, seed=seed,
                                 num_samples=num_samples)

    def get_dp_metrics(self) -> DPMetrics:
        """ε the data set has spent (every client in the workspace), this client's share, δ, steps, σ, C, q."""
        self._check_open()
        return self._worker.call("get_dp_metrics", self._session.dp_metrics)

    def metrics_history(self) -> list[dict]:
        """One record per optim_step (step, time, loss, ε bound, throughput); loss is not private."""
        self._check_open()
        self._worker.drain()
        return list(self._session.metrics_history)

    def adapter_state_dict(self) -> dict:
        """A copy of the trainable LoRA weights under PEFT names (CPU tensors): what a package would carry."""
        self._check_open()
        return self._worker.call("adapter_state_dict", self._session.adapter_state_dict)

    # -- checkpoints ----------------------------------------------------------------------------------
    def save_state(self, name: str | None = None, *, include_optimizer: bool = True,
                   metadata: dict | None = None) -> SaveResult:
        """Encrypt and store weights (and optimizer state) with the run record; returns the artifact id.

        ``name`` defaults to ``step-<n>``. Randomness and privacy state are never saved: loading a
        checkpoint cannot lower ε or replay noise.
        """
        from .engine.checkpoint import session_to_blobs

        self._check_open()
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 200):
            raise ConfigError("save_state needs a non-empty name of at most 200 characters (or no name).")
        if not isinstance(include_optimizer, bool):
            raise ConfigError(f"include_optimizer must be True or False, got {include_optimizer!r}.")
        if metadata is not None and not isinstance(metadata, dict):
            raise ConfigError("metadata must be a dict of JSON values.")
        try:
            json.dumps(metadata or {}, allow_nan=False)
        except (TypeError, ValueError):
            raise ConfigError("metadata must be JSON-serialisable (strings, numbers, lists, dicts).") from None

        def run():
            s = self._session
            s.check_open()
            nm = name if name is not None else f"step-{s.steps}"
            blobs = session_to_blobs(s, include_optimizer=include_optimizer)
            meta = {"user": metadata or {}, "step": s.steps, "model_ref": self.config.model_ref,
                    "kind": "training-state", "include_optimizer": include_optimizer}
            # One recoverable sequence (storage.py): ledger save_begin → file → index → ledger save_state (its
            # parameters are run_record.audit_params("save_state", ...)) → signed ledger checkpoint.
            info = self.service.store.save(nm, blobs, metadata=meta, public={"step": s.steps, "kind": "training-state"},
                                           ledger=self.service.ledger, audit_summary={"step": s.steps})
            info = info.to_dict() if hasattr(info, "to_dict") else dict(info)
            res = SaveResult(info, name=nm, step=s.steps, encrypted=True,
                             content_hash=info.get("content_sha256"), path=info["artifact_id"])
            self.events.publish("save", dict(res))
            return res

        return self._worker.call("save_state", run)

    def load_state(self, artifact_id: str) -> LoadResult:
        """Verify, decrypt and restore a checkpoint's weights and optimizer state (a refused one changes nothing).

        Never restores ε, the step count or any randomness: the data set's budget keeps every step.
        """
        from .engine.checkpoint import restore_session

        self._check_open()
        if not isinstance(artifact_id, str) or not artifact_id:
            raise ConfigError("load_state needs the artifact_id that save_state returned (see list_checkpoints()).")

        def run():
            s = self._session
            s.check_open()
            blobs, _meta, info = self.service.store.load(artifact_id)
            state = restore_session(s, blobs)
            self.service.audit("load_state", {"artifact_id": artifact_id},
                               {"artifact_id": artifact_id, "checkpoint_step": int(state.get("step") or 0),
                                "step": s.steps})
            out = LoadResult(artifact_id=artifact_id, name=getattr(info, "name", None),
                             step=int(state.get("step") or 0), client_step=s.steps,
                             restored=["adapter"] + (["optimizer"] if "optimizer.safetensors" in blobs else []))
            self.events.publish("load", dict(out))
            return out

        return self._worker.call("load_state", run)

    def list_checkpoints(self) -> list[dict]:
        return self.service.list_checkpoints()

    # -- audit, packaging, widgets ------------------------------------------------------------------
    def audit_log(self):
        """The workspace's audit ledger (``.verify()``, ``.to_pandas()``, proofs)."""
        self._check_open()
        self._worker.drain()
        return self.service.ledger

    def run_record(self) -> dict:
        """The checkpoint blobs of the current adapter (weights + run record), for packaging. Torch side."""
        from .engine.checkpoint import session_to_blobs

        self._check_open()
        return self._worker.call("run_record", session_to_blobs, self._session, include_optimizer=False)

    def package(self, path: str | os.PathLike, *, recipients: Sequence[Any], signer: Any = None,
                expires_in_days: float = 365.0, **kwargs: Any):
        """Build a signed TGSP package of the current adapter for ``recipients``."""
        from .tgsp.session import package_session

        self._check_open()
        return PackageManifest(package_session(self, path, recipients=recipients, signer=signer,
                                               expires_in_days=expires_in_days, **kwargs))

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

    def __enter__(self) -> TrainingClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # notebook re-runs: drop hooks of clients that went out of scope
        try:
            if not self.closed:
                self._session.acc.close()
        except Exception:  # noqa: BLE001
            pass
