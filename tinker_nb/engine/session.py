"""The in-kernel training session: one model, one LoRA adapter, one DP-SGD step at a time.

This is the torch side behind :class:`tinker_nb.client.TrainingClient`. It composes the parts that own
state, and owns none of the privacy state itself:

* :class:`~tinker_nb.privacy.PrivacyAccountant`: σ, q, C, δ, the budget, steps and their provenance;
  it charges the workspace's per-data-set odometer before a step touches data;
* :class:`~tinker_nb.engine.data_source.DataSource`: the records, their digest, the secret Poisson coins
  and the registry of draws (each used once, in order, unaltered);
* :class:`~tinker_nb.engine.dp.GradientAccumulator`: the pending step's clipped gradient sum;
* :class:`~tinker_nb.engine.noise.GaussianNoise`: noise from a secret AES-CTR keystream.

It publishes events on an :class:`~tinker_nb.events.EventBus` and reports state-changing operations
through an ``audit`` callback; it knows nothing about widgets, storage, the ledger or the server.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .. import run_record
from ..config import TrainingConfig
from ..errors import ConfigError, DataError, StateError
from ..events import EventBus
from ..privacy import PrivacyAccountant, PrivacyOdometer
from ..records import charge_also_subsets, normalize_records
from ..types import DPMetrics, ForwardBackwardResult, ForwardResult, OptimStepResult
from .batches import IGNORE_INDEX, Batch, collate, to_batch
from .data_source import DataSource, Draw
from .dp import GradientAccumulator
from .generation import SampleResult, generate
from .loss import per_sequence_loss
from .model import add_lora, load_base_model, pick_device
from .noise import GaussianNoise, SecureBernoulli
from .tokenize import encode_prompt, encode_record

__all__ = ["DPMetrics", "ForwardBackwardResult", "ForwardResult", "OptimStepResult", "TrainingSession"]

AuditFn = Callable[[str, dict, dict], None]
BUDGET_WARN_FRACTION = 0.8


def _fingerprints(b: Batch) -> list[bytes]:
    """One SHA-256 per example of its tokens (tells records apart for participation counts).

    Labels are left out on purpose: the same tokens under another label mask are the same person's record
    (its gradient still depends on them), so they must add to the same record's count.
    """
    out = []
    for ids, mask in zip(b.input_ids.tolist(), b.attention_mask.tolist()):
        out.append(hashlib.sha256(repr([t for t, m in zip(ids, mask) if m]).encode()).digest())
    return out


def _check_epochs(epochs: Any) -> None:
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float))
                               or not math.isfinite(epochs) or epochs <= 0):
        raise ConfigError(f"epochs must be > 0, got {epochs!r}.")


class TrainingSession:
    """Model + LoRA + DP-SGD state for one training client."""

    def __init__(self, config: TrainingConfig, *, events: EventBus | None = None, audit: AuditFn | None = None,
                 noise_seed: int | None = None, odometer: PrivacyOdometer | None = None,
                 tenant: str = "default") -> None:
        self._config = copy.deepcopy(config)  # captured once: later changes to the caller's objects change nothing
        config = self._config
        self.session_id = uuid.uuid4().hex[:16]
        self.events = events or EventBus()
        self._audit = audit or (lambda op, params, summary: None)
        self.device = pick_device(config.device)
        loaded = load_base_model(config.model_ref, device=self.device, dtype=config.base_dtype)
        self.tokenizer: Any = loaded.tokenizer
        self.model_path = loaded.path
        self.vocab_size = loaded.vocab_size
        if config.max_seq_len and config.max_seq_len > loaded.max_positions:
            raise ConfigError(f"max_seq_len {config.max_seq_len} exceeds the model's {loaded.max_positions} positions.")
        self.max_len = min(config.max_seq_len or loaded.max_positions, loaded.max_positions)
        self._limit_name = "TrainingConfig.max_seq_len" if config.max_seq_len else "the model's maximum positions"
        self.model = add_lora(loaded.model, config.lora_config, seed=config.seed)
        self.model.train()
        dp = config.dp_config
        self._dp = dp
        self.acc = GradientAccumulator(self.model, dp=dp is not None, max_grad_norm=dp.max_grad_norm if dp else None)
        self.optimizer = torch.optim.AdamW(self.acc.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        # Secret randomness (engine/noise.py): independent AES-256-CTR keystreams keyed from the OS. A fixed
        # noise_seed (tests) derives both keys from it and marks the run invalid.
        self.noise = GaussianNoise.secure() if noise_seed is None else GaussianNoise.seeded(noise_seed)
        self._coins = SecureBernoulli.secure() if noise_seed is None else SecureBernoulli.seeded(noise_seed)
        self.noise_seed_fixed = noise_seed is not None
        # The client's own generator for sample() (no global RNG is read, advanced, saved or restored).
        self.sample_generator = torch.Generator(device="cpu")
        self.sample_generator.manual_seed(secrets.randbits(63))
        self.accountant = PrivacyAccountant(
            dp=dp, batch_size=config.batch_size, odometer=odometer or PrivacyOdometer(":memory:"), tenant=tenant,
            client_id=self.session_id, noise_fixed=noise_seed is not None, epochs=config.epochs)
        self.source: DataSource | None = None
        self.metrics_history: list[dict[str, Any]] = []
        self._pending_tokens = 0
        self._pending_loss = 0.0
        self._pending_clipped = 0
        self._loop: tuple[int, int] | None = None
        self._first_step_checked = False
        self._warned = False
        self.closed = False
        self._t_last_step = time.perf_counter()
        self.timings: dict[str, float] = {"forward": 0.0, "backward": 0.0, "clip_accumulate": 0.0,
                                          "noise": 0.0, "optimizer": 0.0, "accounting": 0.0}
        self._audit("create_training_client", run_record.audit_params("create_training_client", config=config.to_dict()),
                    {"model_ref": config.model_ref, "dp": dp is not None, "rank": config.lora_config.rank})

    # ------------------------------------------------------------------ public read-only views
    @property
    def config(self) -> TrainingConfig:
        """The configuration captured at creation (read-only: what every record and certificate states)."""
        return self._config

    @property
    def dp(self) -> Any:
        """The DPConfig captured at creation (None without DP); read-only."""
        return self._dp

    @property
    def steps(self) -> int:
        return self.accountant.steps

    @property
    def sigma(self) -> float | None:
        return self.accountant.sigma

    @property
    def sample_rate(self) -> float | None:
        return self.accountant.sample_rate

    @property
    def dataset_digest(self) -> str | None:
        return self.source.digest if self.source else None

    @property
    def dataset_size(self) -> int | None:
        return len(self.source) if self.source else None

    def check_open(self) -> None:
        if self.closed:
            raise StateError("this training client is closed; create a new one with service.create_training_client().")


    def encode_text(self, text: Any, *, for_training: bool = True) -> list[int]:
        """The one tokenisation rule (engine/tokenize.py): training text gets BOS and EOS; prompts BOS only."""
        if for_training:
            return list(encode_record(self.tokenizer, text, max_len=self.max_len)["input_ids"])
        return list(encode_prompt(self.tokenizer, text, max_len=10**9))

    def _encode_record(self, i: int, r: Any) -> dict:
        ex = encode_record(self.tokenizer, r, max_len=self.max_len, index=i)
        ids, labels = [int(x) for x in ex["input_ids"]], [int(x) for x in ex["labels"]]
        if not ids:
            raise DataError(f"record {i} has no tokens.")
        if max(ids) >= self.vocab_size or min(ids) < 0:
            raise DataError(f"record {i} has token ids outside [0, {self.vocab_size}).")
        if any(not (x == IGNORE_INDEX or 0 <= x < self.vocab_size) for x in labels):
            raise DataError(f"record {i}: labels must be token ids or -100.")
        return {"input_ids": ids, "labels": labels} if labels != ids else {"input_ids": ids}

    # ------------------------------------------------------------------ data and sampling
    def attach_dataset(self, records: Any, *, charge_also: Any = None) -> dict[str, Any]:
        """Tokenise and hold the private data set; sampling (q = batch_size / N) becomes the library's.

        The data set's budget is the workspace's: a data set whose budget is spent is refused.
        ``charge_also``: record collections contained in ``records`` (for instance your data inside an audit
        run that adds canaries); every Poisson step is charged to their own budgets as well.
        """
        self.check_open()
        if self.source is not None:
            raise StateError("a data set is already attached to this client; create a new client for another data set.")
        records = normalize_records(records)
        if len(records) == 0:
            raise DataError("attach_dataset needs at least one record (strings, prompt/completion or chat dicts, "
                            "tokenised dicts, a pandas column, a JSONL/CSV file or a datasets object).")
        examples = [self._encode_record(i, r) for i, r in enumerate(records)]
        n = len(examples)
        if self.config.batch_size > n:
            raise ConfigError(f"batch_size {self.config.batch_size} is larger than the data set ({n} records); "
                              "lower batch_size or attach more data.")
        source = DataSource(examples, sample_rate=self.config.batch_size / n, coins=self._coins)
        extra: list[str] = []
        if charge_also is not None:
            from ..privacy import dataset_pool
            from .data_source import dataset_digest, records_digest

            subsets = charge_also_subsets(charge_also)
            have = {tuple(e["input_ids"]) + tuple(e.get("labels", ())) for e in examples}
            for sub in subsets:
                sub_ex = [self._encode_record(i, r) for i, r in enumerate(normalize_records(sub))]
                if not sub_ex or any(tuple(e["input_ids"]) + tuple(e.get("labels", ())) not in have for e in sub_ex):
                    raise DataError("charge_also must hold records that are all part of the attached records.")
                pool = dataset_pool(records_digest(sub_ex))
                self.accountant.odometer.carry_over(self.accountant.tenant, dataset_pool(dataset_digest(sub_ex)), pool)
                if pool != dataset_pool(source.pool_digest) and pool not in extra:  # each pool charged once a step
                    extra.append(pool)
        # may refuse: nothing changed (charges made under the older, order-sensitive pool name are carried over)
        info = self.accountant.bind_dataset(digest=source.pool_digest, size=n, legacy_digest=source.digest)
        self.accountant.extra_pools = extra
        self.source = source
        info = {"records": n, "sample_rate": source.sample_rate, "noise_multiplier": self.accountant.sigma,
                "max_steps": info.get("max_steps"), "dataset_sha256": source.digest,
                "dataset_epsilon": info.get("dataset_epsilon"), "also_charged": len(extra),  # None without DP
                "pool": self.accountant.pool}
        self._audit("attach_dataset", run_record.audit_params("attach_dataset", dataset_sha256=source.digest, n=n),
                    {**info, **self._pool_proof()})
        self.events.publish("dataset", info)
        return info

    def planned_steps(self, epochs: float | None = None) -> int:
        from .. import accounting

        if self.source is None:
            raise StateError("attach_dataset(records) first: the number of steps depends on the data set size.")
        _check_epochs(epochs)
        return accounting.steps_for_epochs(sample_rate=self.source.sample_rate, epochs=epochs or self.config.epochs)

    def poisson_batches(self, *, epochs: float | None = None, steps: int | None = None) -> Iterator[Draw]:
        """Hand out ``steps`` draw handles (or enough for ``epochs`` expected passes), lazily, one per step."""
        self.check_open()
        if self.source is None:
            raise StateError("attach_dataset(records) first: the library draws the batches from the attached data.")
        if steps is not None and epochs is not None:
            raise ConfigError("give steps or epochs, not both.")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ConfigError(f"steps must be a positive integer, got {steps!r}.")
        _check_epochs(epochs)
        total = steps if steps is not None else self.planned_steps(epochs)
        source = self.source
        source.new_loop()
        self._loop = (self.steps, total)  # the step events say where in this loop a step is

        def gen() -> Iterator[Draw]:
            for _ in range(total):
                yield source.issue()

        return gen()

    # ------------------------------------------------------------------ training
    def _compute(self, b: Batch) -> tuple[float, int, Any]:
        b = b.to(self.device)
        t1 = time.perf_counter()
        logits = self.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        seq_loss, counts = per_sequence_loss(logits, b.labels)
        t2 = time.perf_counter()
        seq_loss.sum().backward()
        t3 = time.perf_counter()
        stats = self.acc.absorb(b.size)
        t4 = time.perf_counter()
        self.timings["forward"] += t2 - t1
        self.timings["backward"] += t3 - t2
        self.timings["clip_accumulate"] += t4 - t3
        return float(seq_loss.detach().sum()), int(counts.sum()), stats

    def _chunks(self, b: Batch) -> list[Batch]:
        mb = self.config.micro_batch_size
        if not mb or b.size <= mb:
            return [b]
        return [Batch(b.input_ids[i:i + mb], b.attention_mask[i:i + mb], b.labels[i:i + mb])
                for i in range(0, b.size, mb)]

    def forward_backward(self, batch: Any) -> ForwardBackwardResult:
        """Per-sequence loss, backward, per-example clip (DP) and accumulate into the current step.

        A :class:`Draw` is checked (ours, unused, in order), charged to the data set's budget, then sampled;
        a caller-supplied batch is charged by participation count. A refused call changes nothing.
        """
        self.check_open()
        t0 = time.perf_counter()
        if isinstance(batch, Draw):
            if self.source is None:
                raise StateError("this draw is not from this client: attach_dataset(records) and use this client's "
                                 "poisson_batches().")
            self.source.check(batch)
            self.accountant.charge_draw()  # BudgetExceededError here changes nothing
            try:
                idx = self.source.take(batch)
                b = to_batch(collate(self.source.examples(idx), pad_id=self.tokenizer.pad_token_id),
                             tokenizer=self.tokenizer, vocab_size=self.vocab_size, max_len=self.max_len,
                             allow_empty=True)
            except BaseException:
                self.accountant.abandon_pending()
                raise
            source = "poisson"
        else:
            if self.accountant.pending == "poisson":
                raise StateError("the current step holds a library draw; call optim_step() before passing your "
                                 "own batch.")
            b = to_batch(batch, tokenizer=self.tokenizer, vocab_size=self.vocab_size, max_len=self.max_len,
                         encode=lambda s: self.encode_text(s))
            self.accountant.charge_caller_batch(_fingerprints(b) if self.dp is not None else [])
            source = "caller-supplied"
        if b.size == 0:
            res = ForwardBackwardResult(float("nan"), 0.0, 0, 0, 0, 0.0, float("nan"), float("nan"), True,
                                        self.acc.examples, time.perf_counter() - t0, source)
            if self.dp is None and source == "poisson":
                # Without DP an empty draw has nothing to step on (optim_step refuses an empty non-DP step):
                # the draw is done (its charge stands) and the next one may follow.
                self.accountant.abandon_pending()
        else:
            loss_sum, tokens, clipped, norms = 0.0, 0, 0, []
            try:
                for chunk in self._chunks(b):
                    ls, tk, stats = self._compute(chunk)
                    loss_sum += ls
                    tokens += tk
                    clipped += stats.clipped
                    norms.append((stats.norm_mean, stats.norm_max, chunk.size))
            except BaseException:
                # Nothing half-done survives: drop the pending step (its charge stands) and stray gradients.
                self.acc.reset()
                self.accountant.abandon_pending()
                self._pending_tokens, self._pending_loss, self._pending_clipped = 0, 0.0, 0
                raise
            n = b.size
            mean = sum(m * k for m, _, k in norms) / n
            res = ForwardBackwardResult(
                loss=loss_sum / max(tokens, 1), loss_sum=loss_sum, examples=n, tokens=tokens, clipped=clipped,
                clip_fraction=clipped / n, grad_norm_mean=mean, grad_norm_max=max(x for _, x, _ in norms),
                noise_only=False, accumulated_examples=self.acc.examples, seconds=time.perf_counter() - t0,
                source=source)
            self._pending_tokens += tokens
            self._pending_loss += loss_sum
            self._pending_clipped += clipped
        self._audit("forward_backward", {"examples": res.examples, "tokens": res.tokens, "source": source},
                    {"examples": res.examples, "tokens": res.tokens, "source": source})
        self.events.publish("forward_backward", res.to_dict())
        return res

    @torch.no_grad()
    def forward(self, batch: Any) -> ForwardResult:
        """Per-example summed loss and per-token log-probabilities; no gradients, pending step untouched."""
        self.check_open()
        if isinstance(batch, Draw):
            raise DataError("forward() takes your own batch, not a Poisson draw (a draw is for training, once).")
        t0 = time.perf_counter()
        b = to_batch(batch, tokenizer=self.tokenizer, vocab_size=self.vocab_size, max_len=self.max_len,
                     encode=lambda s: self.encode_text(s))
        with self.inference():
            losses: list[float] = []
            logprobs: list[list[float]] = []
            tokens: list[list[int]] = []
            for chunk in self._chunks(b):
                c = chunk.to(self.device)
                logits = self.model(input_ids=c.input_ids, attention_mask=c.attention_mask).logits[:, :-1].float()
                labels = c.labels[:, 1:]
                lp = torch.log_softmax(logits, dim=-1)
                keep = labels != IGNORE_INDEX
                tok_lp = lp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                for i in range(c.size):
                    m = keep[i]
                    row = tok_lp[i][m]
                    logprobs.append([float(x) for x in row.cpu()])
                    tokens.append([int(x) for x in labels[i][m].cpu()])
                    losses.append(float(-row.sum()))
        return ForwardResult(losses=losses, logprobs=logprobs, tokens=tokens, seconds=time.perf_counter() - t0)

    def optim_step(self, *, learning_rate: float | None = None) -> OptimStepResult:
        """Noise once (DP), normalise by the expected batch size, AdamW step, record the step."""
        self.check_open()
        t0 = time.perf_counter()
        if learning_rate is not None and (isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float))
                                          or not (learning_rate > 0 and math.isfinite(learning_rate))):
            raise ConfigError(f"learning_rate must be a positive number, got {learning_rate!r}.")
        dp = self.dp
        if dp is None:
            if self.acc.examples == 0:
                raise StateError("optim_step() with nothing accumulated: call forward_backward(batch) first.")
            noise_std, normaliser = 0.0, float(self.acc.examples)
        else:
            if self.accountant.pending is None:
                raise StateError("optim_step() with nothing drawn: under DP each step releases one draw; call "
                                 "forward_backward(draw) with the next draw of poisson_batches() first (an empty "
                                 "draw gives a noise-only step).")
            assert self.accountant.sigma is not None and self.accountant.max_grad_norm is not None
            noise_std = self.accountant.sigma * self.accountant.max_grad_norm
            normaliser = float(self.config.batch_size)
        if learning_rate is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = float(learning_rate)
        before = None if self._first_step_checked else [p.detach().clone() for p in self.acc.params]
        examples = self.acc.examples
        t1 = time.perf_counter()
        self.acc.write_grads(noise_std=noise_std, normaliser=normaliser, noise=self.noise if noise_std > 0 else None)
        t2 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.acc.reset()
        t3 = time.perf_counter()
        self.timings["noise"] += t2 - t1
        self.timings["optimizer"] += t3 - t2
        if before is not None:
            moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, self.acc.params))
            if not moved and examples:
                raise StateError("LoRA weights did not change after optim_step: the optimizer holds stale "
                                 "parameters (peft/opacus device-placement trap). Please report this.")
            self._first_step_checked = moved or self._first_step_checked
        t_acc = time.perf_counter()
        self.accountant.end_step()
        eps_live = self.accountant.live_epsilon()
        self.timings["accounting"] += time.perf_counter() - t_acc
        now = time.perf_counter()
        dt = now - self._t_last_step
        self._t_last_step = now
        tokens, loss_sum = self._pending_tokens, self._pending_loss
        rec = {
            "step": self.steps, "time": time.time(), "examples": examples, "tokens": tokens,
            "loss": (loss_sum / tokens) if tokens else None, "epsilon": eps_live,
            "target_epsilon": dp.target_epsilon if dp else None, "delta": dp.target_delta if dp else None,
            "examples_per_s": examples / dt if dt > 0 else None, "tokens_per_s": tokens / dt if dt > 0 else None,
            "noise_only": examples == 0, "seconds": dt, "clipped": self._pending_clipped if dp else None,
            "planned_steps": (self._loop[0] + self._loop[1]) if self._loop else None,
        }
        self.metrics_history.append(rec)
        self._pending_tokens = 0
        self._pending_loss = 0.0
        self._pending_clipped = 0
        res = OptimStepResult(self.steps, examples, noise_std, normaliser, eps_live, time.perf_counter() - t0)
        self._audit("optim_step", run_record.audit_params("optim_step", step=self.steps),
                    {"step": self.steps, "examples": examples, "noise_std": noise_std, **self._pool_proof()})
        self.events.publish("step", rec)
        if (dp is not None and dp.target_epsilon and not self._warned and eps_live is not None
                and eps_live >= BUDGET_WARN_FRACTION * dp.target_epsilon):
            self._warned = True
            self.events.publish("budget_warning", {"step": self.steps, "epsilon_live": eps_live,
                                                   "target": dp.target_epsilon})
        return res

    def _pool_proof(self) -> dict[str, Any]:
        """``pool`` and ``pool_charges`` (the odometer's count for it now) for a ledger entry: the ledger then
        proves the odometer holds at least that many charges, so a lost or replaced privacy.sqlite is refused."""
        pool = self.accountant.pool
        if pool is None:
            return {}
        return {"pool": pool, "pool_charges": self.accountant.odometer.charges(self.accountant.tenant, pool)}

    def abandon_pending_step(self) -> bool:
        """Drop a step that was accumulated but never released (an interrupt): its charge stands."""
        if self.accountant.pending is None and not self.acc.examples:
            return False
        self.acc.reset()
        self.accountant.abandon_pending()
        self._pending_tokens, self._pending_loss, self._pending_clipped = 0, 0.0, 0
        self.events.publish("step_dropped", {"step": self.steps, "reason": "interrupted before optim_step"})
        return True

    # ------------------------------------------------------------------ privacy metrics
    def sampling_description(self) -> str:
        return self.accountant.sampling()

    def epsilon(self, *, accountant: str | None = None) -> float:
        """ε the data set has spent (min of the configured accountant's and RDP's bounds)."""
        if self.dp is None:
            return float("inf")
        if accountant is not None:
            from .. import accounting

            comp = self.accountant.pool_composition()
            return accounting.epsilon(list(comp.poisson), delta=self.dp.target_delta, accountant=accountant,
                                      gaussian_mu2=comp.gaussian_mu2)
        rep = self.accountant.epsilon_report()
        return rep.epsilon if rep else float("inf")

    def dp_metrics(self) -> DPMetrics:
        acct = self.accountant
        sampling = acct.sampling()
        if self.dp is None:
            return DPMetrics(False, float("inf"), None, None, None, self.steps, None, None, self.sample_rate,
                             self.config.batch_size, self.dataset_size, None, None, sampling, False, None,
                             ["differential privacy is off (dp_config=None): no guarantee."], noise_source="none",
                             dataset_sha256=self.dataset_digest)
        dp = self.dp
        comp = acct.pool_composition()
        rep = acct.epsilon_report(comp)
        own = acct.epsilon_report(acct.own)
        valid, notes = acct.accounting_valid()
        remaining_steps = acct.remaining_steps()
        assert rep is not None
        return DPMetrics(
            dp_enabled=True, epsilon_spent=rep.epsilon,
            epsilon_remaining=(max(dp.target_epsilon - rep.epsilon, 0.0) if dp.target_epsilon else None),
            target_epsilon=dp.target_epsilon, delta=dp.target_delta, steps=self.steps,
            noise_multiplier=acct.sigma, max_grad_norm=acct.max_grad_norm, sample_rate=acct.sample_rate,
            expected_batch_size=self.config.batch_size, dataset_size=self.dataset_size,
            accountant=acct.accountant_name, epsilon_rdp=rep.epsilon_rdp, sampling=sampling,
            accounting_valid=valid, max_steps=(self.steps + remaining_steps) if remaining_steps is not None else None,
            notes=notes, epsilon_accountant=rep.accountant, client_epsilon=own.epsilon if own else None,
            dataset_steps=comp.steps, dataset_sha256=self.dataset_digest, caller_supplied_mu2=comp.gaussian_mu2,
            pool=acct.pool,
            noise_source=("AES-256-CTR keystream, key fixed by the caller (noise_seed)" if self.noise_seed_fixed
                          else "AES-256-CTR keystream, 256-bit key from the OS"))

    def privacy_record(self) -> dict[str, Any]:
        """The accountant's part of the run record (for checkpoints and packages)."""
        comp = self.accountant.pool_composition()
        return {**self.accountant.state_dict(), "composition": comp.to_dict()}

    # ------------------------------------------------------------------ sampling
    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode with the per-example hooks off (forward passes and generation), restored afterwards."""
        hooks = self.acc.hooks
        was_training = self.model.training
        if hooks is not None:
            hooks.disable_hooks()
        self.model.eval()
        try:
            yield
        finally:
            if was_training:
                self.model.train()
            if hooks is not None:
                hooks.enable_hooks()

    def sample(self, prompts, *, max_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0,
               top_k: int | None = None, stop=None, seed: int | None = None, num_samples: int = 1) -> SampleResult:
        self.check_open()
        with self.inference():
            res = generate(self.model, self.tokenizer, prompts, max_tokens=max_tokens, temperature=temperature,
                           top_p=top_p, top_k=top_k, stop=stop, seed=seed, num_samples=num_samples,
                           device=self.device, max_positions=self.max_len, generator=self.sample_generator,
                           limit_name=self._limit_name, encode=lambda s: self.encode_text(s, for_training=False))
        self._audit("sample", {"prompts": len(res.samples)},
                    {"samples": len(res.samples), "max_tokens": max_tokens, "temperature": float(temperature)})
        return res

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the trainable LoRA weights under PEFT names, on the CPU (what a package would carry)."""
        from peft import get_peft_model_state_dict

        sd = get_peft_model_state_dict(self.model)
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self.closed:
            return
        self.acc.close()
        self.accountant.close()
        self.closed = True
        self._audit("close", {"steps": self.steps}, {"steps": self.steps})
        self.events.publish("close", {"steps": self.steps})
