"""The in-kernel training session: one model, one LoRA adapter, one DP-SGD state machine.

This is the torch side behind :class:`tinker_nb.client.TrainingClient`. It owns the model, the
optimizer, the per-example gradient accumulator, the Poisson sampler, the accountant and the budget.
It publishes events on an :class:`~tinker_nb.events.EventBus` and reports state-changing operations
through an ``audit`` callback; it knows nothing about widgets, storage or the ledger.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import accounting
from ..config import TrainingConfig
from ..errors import BudgetExceededError, ConfigError, DataError, StateError
from ..events import EventBus
from .batches import Batch, PoissonBatch, collate, to_batch
from .dp import GradientAccumulator
from .generation import SampleResult, generate
from .loss import per_sequence_loss
from .model import add_lora, load_base_model, pick_device
from .sampler import PoissonSampler

__all__ = ["TrainingSession", "ForwardBackwardResult", "OptimStepResult", "DPMetrics"]

AuditFn = Callable[[str, dict, dict], None]
BUDGET_WARN_FRACTION = 0.8


@dataclass
class ForwardBackwardResult:
    """What one ``forward_backward`` did. Loss and clip statistics are NOT differentially private."""

    loss: float
    loss_sum: float
    examples: int
    tokens: int
    clipped: int
    clip_fraction: float
    grad_norm_mean: float
    grad_norm_max: float
    noise_only: bool
    accumulated_examples: int
    seconds: float


@dataclass
class OptimStepResult:
    step: int
    examples: int
    noise_std: float
    normaliser: float
    epsilon_live: float | None
    seconds: float


@dataclass
class DPMetrics:
    """Privacy spent so far. ``epsilon_spent`` comes from the reporting accountant (PLD or PRV)."""

    dp_enabled: bool
    epsilon_spent: float
    epsilon_remaining: float | None
    target_epsilon: float | None
    delta: float | None
    steps: int
    noise_multiplier: float | None
    max_grad_norm: float | None
    sample_rate: float | None
    expected_batch_size: int
    dataset_size: int | None
    accountant: str | None
    epsilon_rdp: float | None
    sampling: str
    accounting_valid: bool
    max_steps: int | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _dataset_digest(examples: Sequence[dict]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex["input_ids"], separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


class TrainingSession:
    """Model + LoRA + DP-SGD state for one training client."""

    def __init__(self, config: TrainingConfig, *, events: EventBus | None = None,
                 audit: AuditFn | None = None, noise_seed: int | None = None) -> None:
        self.config = config
        self.session_id = uuid.uuid4().hex[:16]
        self.events = events or EventBus()
        self._audit = audit or (lambda op, params, summary: None)
        self.device = pick_device(config.device)
        loaded = load_base_model(config.model_ref, device=self.device)
        self.tokenizer = loaded.tokenizer
        self.model_path = loaded.path
        self.vocab_size = loaded.vocab_size
        self.max_len = min(config.max_seq_len or loaded.max_positions, loaded.max_positions)
        if config.max_seq_len and config.max_seq_len > loaded.max_positions:
            raise ConfigError(f"max_seq_len {config.max_seq_len} exceeds the model's {loaded.max_positions} positions.")
        self.model = add_lora(loaded.model, config.lora_config, seed=config.seed)
        self.model.train()
        dp = config.dp_config
        self.dp = dp
        self.acc = GradientAccumulator(self.model, dp=dp is not None, max_grad_norm=dp.max_grad_norm if dp else None)
        self.optimizer = torch.optim.AdamW(self.acc.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        # Noise and sampling randomness must stay secret for the DP guarantee: seeded from the OS unless
        # a caller fixes noise_seed (tests, reproductions), which the metrics and certificate then state.
        self.noise_seed_fixed = noise_seed is not None
        seed = noise_seed if noise_seed is not None else secrets.randbits(63)
        self.noise_generator = torch.Generator(device=self.device)
        self.noise_generator.manual_seed(seed)
        self._sampler_seed = (seed * 6364136223846793005 + 1442695040888963407) % (2**63)
        self.sigma: float | None = dp.noise_multiplier if dp else None
        self.sampler: PoissonSampler | None = None
        self.examples: list[dict] | None = None
        self.dataset_digest: str | None = None
        self.history: list[tuple[float, float, int]] = []
        self.steps = 0
        self.max_steps: int | None = None
        self.live: accounting.LiveRDP | None = None
        self.sampling_sources: set[str] = set()
        self._pending_draw: int | None = None
        self._pending_tokens = 0
        self._pending_loss = 0.0
        self._eps_cache: tuple[int, float] | None = None
        self._first_step_checked = False
        self._warned = False
        self.metrics_history: list[dict[str, Any]] = []
        self.closed = False
        self._t_last_step = time.perf_counter()
        # Cumulative seconds per phase (cheap perf_counter reads; the benchmark reads them).
        self.timings: dict[str, float] = {"forward": 0.0, "backward": 0.0, "clip_accumulate": 0.0,
                                          "noise": 0.0, "optimizer": 0.0, "accounting": 0.0}
        self._audit("create_training_client", {"config": config.to_dict()},
                    {"model_ref": config.model_ref, "dp": dp is not None, "rank": config.lora_config.rank})

    # ------------------------------------------------------------------ data and sampling
    def _check_open(self) -> None:
        if self.closed:
            raise StateError("this training client is closed; create a new one with service.create_training_client().")

    def attach_dataset(self, records: Sequence[Any]) -> dict[str, Any]:
        """Tokenise and hold the private data set; sampling (q = batch_size / N) becomes the library's."""
        self._check_open()
        if self.examples is not None:
            raise StateError("a data set is already attached to this client; create a new client for another data set.")
        if isinstance(records, (str, bytes)) or not isinstance(records, Sequence) or len(records) == 0:
            raise DataError("attach_dataset expects a non-empty list of strings or of dicts with input_ids.")
        examples = []
        for i, r in enumerate(records):
            if isinstance(r, str):
                if not r.strip():
                    raise DataError(f"record {i} is an empty string.")
                ids = self.tokenizer(r)["input_ids"]
                bos = getattr(self.tokenizer, "bos_token_id", None)
                if bos is not None and (not ids or ids[0] != bos):
                    ids = [bos] + ids
                ids = (ids + [self.tokenizer.eos_token_id])[: self.max_len]
                examples.append({"input_ids": ids})
            elif isinstance(r, dict):
                if "input_ids" not in r:
                    raise DataError(f"record {i} is a dict without 'input_ids'; pass text or tokenised dicts.")
                ex = {k: [int(x) for x in r[k]] for k in ("input_ids", "labels", "attention_mask") if k in r}
                extra = set(r) - {"input_ids", "labels", "attention_mask"}
                if extra:
                    raise DataError(f"record {i} has unknown keys {sorted(extra)}.")
                if not ex["input_ids"] or len(ex["input_ids"]) > self.max_len:
                    raise DataError(f"record {i} has {len(ex['input_ids'])} tokens; need 1..{self.max_len}.")
                if max(ex["input_ids"]) >= self.vocab_size or min(ex["input_ids"]) < 0:
                    raise DataError(f"record {i} has token ids outside [0, {self.vocab_size}).")
                examples.append(ex)
            else:
                raise DataError(f"record {i} is a {type(r).__name__}; records must be strings or dicts with input_ids.")
        n = len(examples)
        q = self.config.batch_size / n
        if q > 1:
            raise ConfigError(f"batch_size {self.config.batch_size} is larger than the data set ({n} records); "
                              "lower batch_size or attach more data.")
        dp = self.dp
        if dp is not None and dp.target_delta >= 1.0 / n:
            raise ConfigError(f"target_delta {dp.target_delta:g} must be < 1/N = {1.0 / n:.3g} for a meaningful "
                              "guarantee; lower target_delta (e.g. 1/(10*N)).")
        sigma = self.sigma
        if dp is not None and sigma is None:
            planned = accounting.steps_for_epochs(sample_rate=q, epochs=self.config.epochs)
            sigma = accounting.calibrate_noise_multiplier(
                target_epsilon=dp.target_epsilon, delta=dp.target_delta, sample_rate=q, steps=planned,
                accountant=self._acct())
        max_steps = None
        anchors: dict[int, float] = {}
        if dp is not None and dp.target_epsilon is not None:
            max_steps = accounting.max_steps_within(
                noise_multiplier=sigma, sample_rate=q, target_epsilon=dp.target_epsilon,
                delta=dp.target_delta, accountant=self._acct(), evaluated=anchors)
            if max_steps == 0:
                raise ConfigError(f"even one step with noise_multiplier {sigma:g} and sample rate {q:.3g} exceeds "
                                  f"target_epsilon {dp.target_epsilon:g}; raise the noise or the target.")
        # Everything checked: commit.
        self.examples = examples
        self.dataset_digest = _dataset_digest(examples)
        self.sigma = sigma
        self.max_steps = max_steps
        self.sampler = PoissonSampler(n, q, seed=self._sampler_seed)
        if dp is not None:
            # Exact ε values the budget search already computed tighten the live bound for free.
            self.live = accounting.LiveRDP(sigma, q, anchors=anchors, anchor_delta=dp.target_delta)
        info = {"records": n, "sample_rate": q, "noise_multiplier": sigma, "max_steps": max_steps,
                "dataset_sha256": self.dataset_digest}
        self._audit("attach_dataset", {"dataset_sha256": self.dataset_digest, "n": n}, info)
        self.events.publish("dataset", info)
        return info

    @property
    def sample_rate(self) -> float | None:
        return self.sampler.sample_rate if self.sampler else None

    def planned_steps(self, epochs: float | None = None) -> int:
        if self.sampler is None:
            raise StateError("attach_dataset(records) first: the number of steps depends on the data set size.")
        return accounting.steps_for_epochs(sample_rate=self.sampler.sample_rate, epochs=epochs or self.config.epochs)

    def poisson_batches(self, *, epochs: float | None = None, steps: int | None = None) -> Iterator[PoissonBatch]:
        """Yield Poisson-sampled batches (possibly empty) for ``epochs`` expected passes or ``steps`` draws."""
        self._check_open()
        if self.sampler is None:
            raise StateError("attach_dataset(records) first: the library draws the batches from the attached data.")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ConfigError(f"steps must be a positive integer, got {steps!r}.")
        if epochs is not None and not (isinstance(epochs, (int, float)) and epochs > 0):
            raise ConfigError(f"epochs must be > 0, got {epochs!r}.")
        total = steps if steps is not None else self.planned_steps(epochs)
        for _ in range(total):
            idx = self.sampler.draw()
            data = collate([self.examples[i] for i in idx], pad_id=self.tokenizer.pad_token_id)
            yield PoissonBatch(data, session_id=self.session_id, draw=self.sampler.draws, indices=idx)

    # ------------------------------------------------------------------ training
    def _acct(self) -> str:
        return self.dp.accountant if self.dp else "pld"

    def forward_backward(self, batch: Any) -> ForwardBackwardResult:
        """Per-sequence loss, backward, per-example clip (DP) and accumulate into the current step."""
        self._check_open()
        t0 = time.perf_counter()
        is_poisson = isinstance(batch, PoissonBatch) and batch.session_id == self.session_id
        if self.dp is not None:
            if self.sampler is None:
                raise StateError("DP training needs attach_dataset(records) first, so that the library samples "
                                 "batches (q = batch_size / N) and accounts for them.")
            if is_poisson and self._pending_draw is not None and batch.draw != self._pending_draw:
                raise DataError(f"this batch is Poisson draw {batch.draw} but the current step already holds draw "
                                f"{self._pending_draw}; call optim_step() between draws (chunks of one draw may "
                                "accumulate, separate draws may not).")
        b = to_batch(batch, tokenizer=self.tokenizer, vocab_size=self.vocab_size, max_len=self.max_len,
                     allow_empty=is_poisson)
        source = "poisson" if is_poisson else "caller-supplied"
        if b.size == 0:
            res = ForwardBackwardResult(float("nan"), 0.0, 0, 0, 0, 0.0, float("nan"), float("nan"), True,
                                        self.acc.examples, time.perf_counter() - t0)
        else:
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
            tokens = int(counts.sum())
            loss_sum = float(seq_loss.detach().sum())
            res = ForwardBackwardResult(
                loss=loss_sum / max(tokens, 1), loss_sum=loss_sum, examples=b.size, tokens=tokens,
                clipped=stats.clipped, clip_fraction=stats.clip_fraction, grad_norm_mean=stats.norm_mean,
                grad_norm_max=stats.norm_max, noise_only=False, accumulated_examples=self.acc.examples,
                seconds=time.perf_counter() - t0)
            self._pending_tokens += tokens
            self._pending_loss += loss_sum
        self.sampling_sources.add(source)
        if is_poisson:
            self._pending_draw = batch.draw
        self._audit("forward_backward", {"examples": res.examples, "tokens": res.tokens, "source": source},
                    {"examples": res.examples, "tokens": res.tokens, "source": source})
        self.events.publish("forward_backward", {k: v for k, v in res.__dict__.items()})
        return res

    def optim_step(self, *, learning_rate: float | None = None) -> OptimStepResult:
        """Noise once (DP), normalise, AdamW step, account. Refused (unchanged) past the ε budget."""
        self._check_open()
        t0 = time.perf_counter()
        if learning_rate is not None and not (isinstance(learning_rate, (int, float)) and learning_rate > 0
                                              and math.isfinite(learning_rate)):
            raise ConfigError(f"learning_rate must be a positive number, got {learning_rate!r}.")
        dp = self.dp
        if dp is None:
            if self.acc.examples == 0:
                raise StateError("optim_step() with nothing accumulated: call forward_backward(batch) first.")
            noise_std, normaliser = 0.0, float(self.acc.examples)
        else:
            if self.sampler is None:
                raise StateError("DP training needs attach_dataset(records) first.")
            if self.max_steps is not None and self.steps + 1 > self.max_steps:
                would = accounting.epsilon(self.history + [(self.sigma, self.sampler.sample_rate, 1)],
                                           delta=dp.target_delta, accountant=self._acct())
                self.events.publish("budget_refused", {"epsilon_would_be": would, "target": dp.target_epsilon,
                                                       "step": self.steps})
                raise BudgetExceededError(
                    f"this step would spend ε={would:.4g} > target_epsilon={dp.target_epsilon:g} "
                    f"(δ={dp.target_delta:g}, {self.steps} steps taken); nothing was changed. Stop training, "
                    "save, or start a new run with a larger budget.")
            noise_std, normaliser = self.sigma * dp.max_grad_norm, float(self.config.batch_size)
        if learning_rate is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = float(learning_rate)
        before = None if self._first_step_checked else [p.detach().clone() for p in self.acc.params]
        examples = self.acc.examples
        t1 = time.perf_counter()
        self.acc.write_grads(noise_std=noise_std, normaliser=normaliser,
                             generator=self.noise_generator if noise_std > 0 else None)
        t2 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.acc.reset()
        t3 = time.perf_counter()
        self.timings["noise"] += t2 - t1
        self.timings["optimizer"] += t3 - t2
        if before is not None:
            moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, self.acc.params))
            if not moved:
                raise StateError("LoRA weights did not change after optim_step: the optimizer holds stale "
                                 "parameters (peft/opacus device-placement trap). Please report this.")
            self._first_step_checked = True
        self.steps += 1
        eps_live = None
        t_acc = time.perf_counter()
        if dp is not None:
            q = self.sampler.sample_rate
            if self.history and self.history[-1][:2] == (self.sigma, q):
                s, qq, n = self.history[-1]
                self.history[-1] = (s, qq, n + 1)
            else:
                self.history.append((self.sigma, q, 1))
            self.live.step()
            eps_live = self.live.bound(dp.target_delta)
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
            "noise_only": examples == 0,
        }
        self.metrics_history.append(rec)
        self._pending_draw = None
        self._pending_tokens = 0
        self._pending_loss = 0.0
        res = OptimStepResult(self.steps, examples, noise_std, normaliser, eps_live, time.perf_counter() - t0)
        self._audit("optim_step", {"step": self.steps}, {"step": self.steps, "examples": examples,
                                                          "noise_std": noise_std})
        self.events.publish("step", rec)
        if dp is not None and dp.target_epsilon and not self._warned and self.max_steps:
            if self.steps >= BUDGET_WARN_FRACTION * self.max_steps:
                self._warned = True
                self.events.publish("budget_warning", {"step": self.steps, "max_steps": self.max_steps,
                                                       "epsilon_live": eps_live, "target": dp.target_epsilon})
        return res

    # ------------------------------------------------------------------ privacy metrics
    def sampling_description(self) -> str:
        if not self.sampling_sources:
            return "poisson" if self.sampler else "none"
        if self.sampling_sources == {"poisson"}:
            return "poisson"
        if self.sampling_sources == {"caller-supplied"}:
            return "caller-supplied"
        return "mixed (poisson and caller-supplied)"

    def epsilon(self, *, accountant: str | None = None) -> float:
        """ε spent so far under the reporting accountant (cached per step count)."""
        if self.dp is None:
            return float("inf")
        acct = accountant or self._acct()
        if accountant is None and self._eps_cache and self._eps_cache[0] == self.steps:
            return self._eps_cache[1]
        eps = accounting.epsilon(self.history, delta=self.dp.target_delta, accountant=acct)
        if accountant is None:
            self._eps_cache = (self.steps, eps)
        return eps

    def dp_metrics(self) -> DPMetrics:
        dp = self.dp
        sampling = self.sampling_description()
        notes = []
        if dp is None:
            return DPMetrics(False, float("inf"), None, None, None, self.steps, None, None, self.sample_rate,
                             self.config.batch_size, len(self.examples) if self.examples else None, None, None,
                             sampling, False, None, ["differential privacy is off (dp_config=None): no guarantee."])
        valid = sampling in ("poisson", "none")
        if not valid:
            notes.append("batches were not all drawn by the library's Poisson sampler: the reported ε assumes "
                         "Poisson sampling and is NOT a valid guarantee for this run.")
        if self.noise_seed_fixed:
            notes.append("the noise seed was fixed by the caller: anyone who knows it can remove the noise.")
            valid = False
        eps = self.epsilon()
        return DPMetrics(
            dp_enabled=True, epsilon_spent=eps,
            epsilon_remaining=(max(dp.target_epsilon - eps, 0.0) if dp.target_epsilon else None),
            target_epsilon=dp.target_epsilon, delta=dp.target_delta, steps=self.steps,
            noise_multiplier=self.sigma, max_grad_norm=dp.max_grad_norm, sample_rate=self.sample_rate,
            expected_batch_size=self.config.batch_size, dataset_size=len(self.examples) if self.examples else None,
            accountant=self._acct(), epsilon_rdp=self.live.epsilon(dp.target_delta) if self.live else 0.0,
            sampling=sampling, accounting_valid=valid, max_steps=self.max_steps, notes=notes)

    # ------------------------------------------------------------------ sampling
    def sample(self, prompts, *, max_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0,
               top_k: int | None = None, stop=None, seed: int | None = None, num_samples: int = 1) -> SampleResult:
        self._check_open()
        was_training = self.model.training
        hooks = self.acc.hooks
        if hooks is not None:
            hooks.disable_hooks()
        self.model.eval()
        try:
            res = generate(self.model, self.tokenizer, prompts, max_tokens=max_tokens, temperature=temperature,
                           top_p=top_p, top_k=top_k, stop=stop, seed=seed, num_samples=num_samples,
                           device=self.device, max_positions=self.max_len)
        finally:
            if was_training:
                self.model.train()
            if hooks is not None:
                hooks.enable_hooks()
        self._audit("sample", {"prompts": len(res.samples)},
                    {"samples": len(res.samples), "max_tokens": max_tokens, "temperature": float(temperature)})
        return res

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self.closed:
            return
        self.acc.close()
        self.closed = True
        self._audit("close", {"steps": self.steps}, {"steps": self.steps})
        self.events.publish("close", {"steps": self.steps})
