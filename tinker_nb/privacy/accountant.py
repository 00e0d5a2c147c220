"""One owner of a training client's privacy state: σ, q, C, δ, the budget, the steps and their provenance.

The accountant is the only object that decides whether a step may happen (the budget of the data set
the step touches) and the only one that says what was spent. It charges every step to the workspace's
:class:`~tinker_nb.privacy.odometer.PrivacyOdometer` *before* the step touches data, so the data set's ε
only grows, whatever the caller does afterwards (``load_state``, a new client, a crash).

Two kinds of steps:

* **Poisson** (a library draw): each record joins independently with rate q; accounted as the
  Poisson-subsampled Gaussian mechanism (amplified).
* **Caller-supplied** (batches the caller chose): accounted by participation count, without
  amplification. A record that took part in steps with noise multipliers σ_1..σ_k, ``m_i`` times in
  step i, is a Gaussian mechanism with μ² = Σ m_i²/σ_i²; we charge the largest μ² over distinct
  records (records are told apart by the SHA-256 of their tokens, kept in memory only). Valid under the
  stated assumption that which steps a record takes part in does not depend on any record's contents
  and that adding or removing one record leaves the other records' batches unchanged.

Torch-free: this module and :mod:`tinker_nb.accounting` are all a verifier needs to recompute ε.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import accounting
from ..config import DPConfig
from ..errors import BudgetExceededError, ConfigError, StateError
from ..run_record import sampling_label
from .odometer import CALLER_POOL, Composition, PrivacyOdometer, dataset_pool

__all__ = ["PrivacyAccountant", "StepCharge"]


@dataclass(frozen=True)
class StepCharge:
    """What one admitted step charged: its kind and the pool's composition right after."""

    kind: str  # "poisson" or "caller-supplied"
    pool: str
    composition: Composition


class _Rdp:
    """RDP of a composition as a vector over :data:`accounting.RDP_ORDERS` (cheap, an upper bound)."""

    def __init__(self) -> None:
        self.orders = np.asarray(accounting.RDP_ORDERS, dtype=float)
        self._per_step: dict[tuple[float, float], np.ndarray] = {}
        self._offset: dict[float, np.ndarray] = {}

    def per_step(self, sigma: float, q: float) -> np.ndarray:
        key = (float(sigma), float(q))
        if key not in self._per_step:
            from dp_accounting.rdp import rdp_privacy_accountant as rdp

            # dp_accounting's (documented-in-code) per-step RDP of the subsampled Gaussian
            with accounting.quiet_absl():
                self._per_step[key] = np.asarray(rdp._compute_rdp_poisson_subsampled_gaussian(q, sigma, self.orders),
                                                 dtype=float)
        return self._per_step[key]

    def epsilon(self, comp: Composition, delta: float) -> float:
        if comp.empty:
            return 0.0
        r = np.zeros_like(self.orders)
        for s, q, n in comp.poisson:
            r = r + self.per_step(s, q) * n
        r = r + self.orders * comp.gaussian_mu2 / 2.0  # Gaussian: RDP(α) = α μ² / 2
        if delta not in self._offset:
            a = self.orders
            with np.errstate(divide="ignore", invalid="ignore"):
                self._offset[delta] = np.where(a > 1.01, np.log1p(-1 / a) - np.log(delta * a) / (a - 1), np.inf)
        eps = r + self._offset[delta]
        eps = np.where((r < 0) | (delta**2 + np.expm1(-r) > 0), 0.0, eps)
        return float(max(0.0, np.nanmin(eps)))


class _LivePLD:
    """Exact ε after every step, without an accountant call on the training path.

    Holds the privacy-loss distribution of ``base`` (the pool when it was built) plus k of this client's
    Poisson steps, and composes one more step (one FFT convolution, a few ms) in a background thread
    while the next step trains. ``exact(k)`` is ready when the step lands; any valid PLD is an upper bound.
    """

    def __init__(self, base: Composition, sigma: float, q: float, delta: float, interval: float) -> None:
        import concurrent.futures as cf

        self.base, self.sigma, self.q, self.delta, self.interval = base, sigma, q, delta, interval
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinker-nb-live-eps")
        self._lock = threading.Lock()
        self._values: dict[int, float] = {}
        self._pld: Any = None
        self._k = -1
        self._busy = False

    def _gaussian(self, sigma: float, q: float) -> Any:
        from dp_accounting.pld import privacy_loss_distribution as pld

        return pld.from_gaussian_mechanism(standard_deviation=sigma, sampling_prob=q,
                                           value_discretization_interval=self.interval)

    def _build_base(self) -> Any:
        out = None
        for s, q, n in self.base.poisson:
            part = self._gaussian(s, q).self_compose(n)
            out = part if out is None else out.compose(part)
        if self.base.gaussian_mu2 > 0:
            part = self._gaussian(1.0 / self.base.gaussian_mu2 ** 0.5, 1.0)
            out = part if out is None else out.compose(part)
        return out

    def _advance_to(self, k: int) -> None:
        with accounting.quiet_absl():
            if self._pld is None and self._k < 0:
                self._pld, self._k = self._build_base(), 0
                self._one = self._gaussian(self.sigma, self.q)
            while self._k < k:
                self._pld = self._one if self._pld is None else self._pld.compose(self._one)
                self._k += 1
            eps = float(self._pld.get_epsilon_for_delta(self.delta)) if self._pld is not None else 0.0
        with self._lock:
            self._values[self._k] = eps
            for old in [x for x in self._values if x < self._k - 4]:
                del self._values[old]

    def prefetch(self, k: int) -> None:
        with self._lock:
            if self._busy or k in self._values:
                return
            self._busy = True

        def run() -> None:
            try:
                self._advance_to(k)
            except Exception:  # noqa: BLE001 - a display aid: the RDP bound stays in place
                pass
            finally:
                with self._lock:
                    self._busy = False

        self._pool.submit(run)

    def exact(self, k: int) -> float | None:
        with self._lock:
            return self._values.get(k)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class PrivacyAccountant:
    """σ, q, C, δ, the budget and the provenance of every step of one training client."""

    def __init__(self, *, dp: DPConfig | None, batch_size: int, odometer: PrivacyOdometer, tenant: str,
                 client_id: str, noise_fixed: bool, epochs: float = 1.0) -> None:
        self.dp = dp
        self.batch_size = int(batch_size)
        self.odometer = odometer
        self.tenant = tenant
        self.client_id = client_id
        self.noise_fixed = bool(noise_fixed)
        self.epochs = float(epochs)  # the plan σ is calibrated for when only target_epsilon is given
        self.sigma: float | None = dp.noise_multiplier if dp else None
        self.max_grad_norm: float | None = dp.max_grad_norm if dp else None
        self.delta: float | None = dp.target_delta if dp else None
        self.target: float | None = dp.target_epsilon if dp else None
        self.accountant_name: str = dp.accountant if dp else "pld"
        self.pool: str | None = None
        self.dataset_size: int | None = None
        self.sample_rate: float | None = None
        self.steps = 0  # steps this client has taken (never reset)
        self.sources: dict[str, int] = {}  # provenance: "poisson" / "caller-supplied" -> steps
        self.own = Composition()  # this client's own releases
        self._mu2_record: dict[bytes, float] = {}
        self._mu2_max = 0.0
        self._step_mult: dict[bytes, int] = {}
        self._pending: str | None = None  # kind of the step being accumulated
        self._rdp = _Rdp()
        self._headroom: tuple[Composition, int] | None = None  # (base composition, steps of (σ, q) that fit)
        self._live: _LivePLD | None = None
        self.extra_pools: list[str] = []  # subsets of the attached data set: every step is charged to them too
        self.inherited = False  # weights loaded from a checkpoint that was trained (load_state)
        self.inherited_noise_fixed = False  # ... by a client whose noise seed the caller fixed
        self.inherited_sources: set[str] = set()  # ... with these kinds of steps ("poisson", "caller-supplied")
        self._exact: dict[tuple[Any, ...], accounting.EpsilonReport] = {}

    # ---------------------------------------------------------------- setup
    def bind_dataset(self, *, digest: str, size: int, legacy_digest: str | None = None) -> dict[str, Any]:
        """Bind the client to a data set's pool; calibrate σ if only ``target_epsilon`` was given.

        ``digest`` names the pool (order-free); charges made under ``legacy_digest``'s pool (the ordered
        digest that named pools before) are carried over first. Refused (nothing else changes) when the data
        set's budget cannot fit one more step.
        """
        if self.pool is not None and self.pool != CALLER_POOL:
            raise StateError("a data set is already attached to this client; create a new client for another data set.")
        if self.steps or self._pending is not None or (self.dp is not None and (self.pool is not None or self.inherited)):
            # The weights already hold caller-supplied steps (taken, accumulated, or loaded from a checkpoint):
            # re-binding to a data set's pool would drop them from what this client reports and certifies.
            raise StateError("this client already took (or accumulated, or loaded weights trained with) "
                             "caller-supplied steps; attach the data set to a new client, before any load_state, "
                             "so that its budget covers every step behind the weights.")
        q = self.batch_size / size
        if q > 1:
            raise ConfigError(f"batch_size {self.batch_size} is larger than the data set ({size} records); "
                              "lower batch_size or attach more data.")
        pool = dataset_pool(digest)
        if legacy_digest is not None and legacy_digest != digest:
            self.odometer.carry_over(self.tenant, dataset_pool(legacy_digest), pool)
        dp = self.dp
        sigma = self.sigma
        info: dict[str, Any] = {"records": size, "sample_rate": q, "pool": pool}
        if dp is not None:
            if dp.target_delta >= 1.0 / size:
                raise ConfigError(f"target_delta {dp.target_delta:g} must be < 1/N = {1.0 / size:.3g} for a "
                                  "meaningful guarantee; lower target_delta (e.g. 1/(10*N)).")
            if sigma is None:
                planned = accounting.steps_for_epochs(sample_rate=q, epochs=self.epochs)
                assert dp.target_epsilon is not None  # DPConfig requires noise_multiplier or target_epsilon
                sigma = accounting.calibrate_noise_multiplier(
                    target_epsilon=dp.target_epsilon, delta=dp.target_delta, sample_rate=q, steps=planned,
                    accountant=self.accountant_name)
            spent = self.odometer.composition(self.tenant, pool)
            if spent.unprotected_steps:  # with or without a target: no finite ε holds for this data set
                raise BudgetExceededError(
                    f"this data set was trained on WITHOUT differential privacy in this workspace "
                    f"({spent.unprotected_steps} steps by a client with dp_config=None): its ε is unbounded, so no "
                    "DP budget remains. Nothing was attached. Train on data that has not been released without DP.")
            if self.target is not None:
                room = accounting.max_steps_within(
                    noise_multiplier=sigma, sample_rate=q, target_epsilon=self.target, delta=dp.target_delta,
                    accountant=self.accountant_name, prior=list(spent.poisson), prior_mu2=spent.gaussian_mu2)
                if room == 0:
                    eps = spent.report(delta=dp.target_delta, accountant=self.accountant_name).epsilon
                    if spent.empty:
                        raise ConfigError(f"even one step with noise_multiplier {sigma:g} and sample rate {q:.3g} "
                                          f"exceeds target_epsilon {self.target:g}; raise the noise or the target.")
                    raise BudgetExceededError(
                        f"this data set's privacy budget is spent: {spent.steps} steps by earlier clients in this "
                        f"workspace already spent ε={eps:.4g} (δ={dp.target_delta:g}), and one more step would pass "
                        f"target_epsilon={self.target:g}. Nothing was attached. Train on new data, or (if your "
                        "privacy policy allows it) use a larger target_epsilon.")
                self._headroom = (spent, room)
                info["max_steps"] = room
            info["noise_multiplier"] = sigma
            info["dataset_epsilon"] = spent.report(delta=dp.target_delta, accountant=self.accountant_name).epsilon \
                if not spent.empty else 0.0
        self.pool, self.dataset_size, self.sample_rate, self.sigma = pool, size, q, sigma
        if dp is not None and sigma is not None:
            self._start_live(self.odometer.composition(self.tenant, pool))
        return info

    def _start_live(self, base: Composition) -> None:
        assert self.dp is not None and self.sigma is not None and self.sample_rate is not None
        if self._live is not None:
            self._live.close()
        interval = accounting.pld_interval(list(base.add_poisson(self.sigma, self.sample_rate, 100).poisson),
                                           base.gaussian_mu2, self.dp.target_delta)
        self._live = _LivePLD(base, self.sigma, self.sample_rate, self.dp.target_delta, interval)
        self._live.prefetch(1)

    # ---------------------------------------------------------------- the budget
    def _admit(self, cur: Composition, prop: Composition) -> None:
        """Budget check of this client's pool: cheap RDP, then the cached headroom, then an exact check."""
        if self._admit_cheaply(cur, prop):
            return
        if self._headroom is not None and self.sigma is not None and self.sample_rate is not None:
            base, room = self._headroom
            extra = _extra_steps(base, prop, self.sigma, self.sample_rate)
            if extra is not None:
                if extra <= room:
                    return
                self._refuse(cur, prop)
        # Someone else charged the pool, or a caller-supplied step: an exact check (and new headroom).
        self._admit_exact(cur, prop)
        assert self.dp is not None and self.target is not None
        if self.sigma is not None and self.sample_rate is not None and prop.gaussian_mu2 == cur.gaussian_mu2:
            room = accounting.max_steps_within(
                noise_multiplier=self.sigma, sample_rate=self.sample_rate, target_epsilon=self.target,
                delta=self.dp.target_delta, accountant=self.accountant_name, prior=list(cur.poisson),
                prior_mu2=cur.gaussian_mu2)
            self._headroom = (cur, room)

    def _admit_cheaply(self, cur: Composition, prop: Composition) -> bool:
        """True when the step surely fits (no target, or the RDP bound fits); refuses unprotected pools."""
        if self.dp is None:
            return True
        if prop.unprotected_steps:
            raise BudgetExceededError(
                f"this data set was trained on WITHOUT differential privacy in this workspace "
                f"({prop.unprotected_steps} steps by a client with dp_config=None): its ε is unbounded, so no DP "
                "step can be admitted. Nothing was changed.")
        if self.target is None:
            return True
        return self._rdp.epsilon(prop, self.dp.target_delta) <= self.target  # RDP is an upper bound

    def _admit_exact(self, cur: Composition, prop: Composition) -> None:
        """Budget check without the per-pool headroom cache (also for the extra pools of a superset run)."""
        if self._admit_cheaply(cur, prop):
            return
        rep = self._report(prop)
        assert self.target is not None
        if rep.epsilon > self.target:
            self._refuse(cur, prop, rep)

    def _refuse(self, cur: Composition, prop: Composition, rep: accounting.EpsilonReport | None = None) -> None:
        assert self.dp is not None and self.target is not None
        rep = rep or self._report(prop)
        now = self._report(cur).epsilon if not cur.empty else 0.0
        raise BudgetExceededError(
            f"this step would spend ε={rep.epsilon:.4g} > target_epsilon={self.target:g} on this data set "
            f"(δ={self.dp.target_delta:g}; {cur.steps} steps so far by every client, ε={now:.4g} spent); nothing "
            "was changed. Stop training and save, or start a new run on new data with a larger budget.")

    def _report(self, comp: Composition) -> accounting.EpsilonReport:
        assert self.dp is not None
        key = (comp.poisson, comp.gaussian_mu2, comp.unprotected_steps, self.dp.target_delta, self.accountant_name)
        if key not in self._exact:
            if len(self._exact) > 256:
                self._exact.clear()
            self._exact[key] = comp.report(delta=self.dp.target_delta, accountant=self.accountant_name)
        return self._exact[key]

    # ---------------------------------------------------------------- charging
    def charge_draw(self) -> StepCharge:
        """Admit and charge one Poisson step on the bound data set (before any record is read)."""
        if self.pool is None or self.pool == CALLER_POOL or self.sample_rate is None:
            raise StateError("attach_dataset(records) first: the library draws the batches from the attached data.")
        if self._pending is not None:
            raise StateError("a step is already being accumulated; call optim_step() before the next draw.")
        kind = "poisson"
        if self.dp is None:  # a release without DP: the data set's ε becomes unbounded, for every client
            for pool in (self.pool, *self.extra_pools):  # the subsets' own pools too (their records were in it)
                self.odometer.charge_unprotected(self.tenant, pool, self.client_id)
            self._pending = kind
            return StepCharge(kind, self.pool, self.own)
        assert self.sigma is not None
        comp = self.odometer.charge(self.tenant, self.pool, self.client_id, poisson=(self.sigma, self.sample_rate),
                                    noise_known=self.noise_fixed, admit=self._admit)
        for extra in self.extra_pools:
            # A record of a subset joins each Poisson step of the superset with the same rate q: the same
            # mechanism, charged to the subset's own pool (its budget is checked too; the main charge stands).
            self.odometer.charge(self.tenant, extra, self.client_id, poisson=(self.sigma, self.sample_rate),
                                 noise_known=self.noise_fixed, admit=self._admit_exact)
        self.own = self.own.add_poisson(self.sigma, self.sample_rate)
        self._pending = kind
        return StepCharge(kind, self.pool, comp)

    def charge_caller_batch(self, fingerprints: Iterable[bytes]) -> StepCharge | None:
        """Admit and charge the records of a caller-supplied batch (participation counting).

        Returns None without DP. Several calls before one ``optim_step`` belong to one step: a record
        that appears m times in a step counts m²/σ² toward its μ².
        """
        if self._pending == "poisson":
            raise StateError("the current step holds a library draw; call optim_step() before passing your own "
                             "batch (a step is either one draw or caller-supplied batches, not both).")
        fps = list(fingerprints)
        if self.dp is None:
            if self.pool is not None and self.pool != CALLER_POOL:  # own batches next to an attached data set
                for pool in (self.pool, *self.extra_pools):
                    self.odometer.charge_unprotected(self.tenant, pool, self.client_id)
            self._pending = "caller-supplied"
            return None
        if self.sigma is None:
            raise ConfigError("caller-supplied batches under DP need DPConfig(noise_multiplier=...) (σ cannot be "
                              "calibrated without a data set), or attach_dataset(records) so that σ is calibrated "
                              "and the library draws the batches.")
        pool = self.pool or CALLER_POOL
        inv = 1.0 / (self.sigma * self.sigma)
        mult = dict(self._step_mult)
        new_rec: dict[bytes, float] = {}
        for fp in fps:
            m = mult.get(fp, 0)
            base = new_rec.get(fp, self._mu2_record.get(fp, 0.0))
            new_rec[fp] = base + ((m + 1) ** 2 - m * m) * inv
            mult[fp] = m + 1
        new_max = max([self._mu2_max, *new_rec.values()])
        inc = new_max - self._mu2_max
        if inc > 0:
            comp = self.odometer.charge(self.tenant, pool, self.client_id, gaussian_mu2=inc,
                                        noise_known=self.noise_fixed, admit=self._admit)
            for extra in self.extra_pools:
                # The caller's batch may hold records of a subset (charge_also): their own pool gets the same
                # increase (an upper bound on any of its records' μ² increase).
                self.odometer.charge(self.tenant, extra, self.client_id, gaussian_mu2=inc,
                                     noise_known=self.noise_fixed, admit=self._admit_exact)
        else:
            comp = self.odometer.composition(self.tenant, pool)
        # admitted: commit the counts
        self._mu2_record.update(new_rec)
        self._mu2_max = new_max
        self._step_mult = mult
        self.own = self.own.add_gaussian(inc)
        if self.pool is None:
            self.pool = CALLER_POOL
        self._pending = "caller-supplied"
        return StepCharge("caller-supplied", pool, comp)

    def adopt_checkpoint(self, state: dict[str, Any]) -> None:
        """``load_state`` restored weights with this run record: what they were trained on now counts here.

        Weights trained on caller-supplied batches without a data set bind this client to the tenant's
        caller-supplied pool (its ε is what those weights carry); weights trained with a caller-fixed
        noise seed make this client's accounting invalid. Nothing is ever lowered.
        """
        trained = bool(state.get("pool") or state.get("step") or state.get("history") or state.get("gaussian_mu2"))
        if not trained:
            return
        self.inherited = True
        self.inherited_sources.update(k for k in state.get("sampling_sources") or [] if k != "none")
        if state.get("noise_seed_fixed"):
            self.inherited_noise_fixed = True
        if self.dp is not None and self.pool is None and state.get("pool") == CALLER_POOL:
            self.pool = CALLER_POOL

    def noise_known(self, comp: Composition | None = None) -> bool:
        """True when some noise behind these weights or this pool came from a caller-fixed seed."""
        comp = self.pool_composition() if comp is None else comp
        return self.noise_fixed or self.inherited_noise_fixed or comp.noise_known_clients > 0

    @property
    def pending(self) -> str | None:
        """The kind of the step being accumulated (None when no forward_backward since the last step)."""
        return self._pending

    def abandon_pending(self) -> None:
        """A failed forward_backward: the charge stands (the draw happened), the step is dropped."""
        self._pending = None
        self._step_mult = {}

    def end_step(self) -> None:
        """An optim_step released the pending step."""
        kind = self._pending or "none"
        self.sources[kind] = self.sources.get(kind, 0) + 1
        self.steps += 1
        self._pending = None
        self._step_mult = {}

    # ---------------------------------------------------------------- reporting
    def pool_composition(self) -> Composition:
        if self.pool is None:
            return Composition()
        return self.odometer.composition(self.tenant, self.pool)

    def sampling(self) -> str:
        """The run record's sampling label (before any step: what an attached data set will give)."""
        kinds = [k for k, n in self.sources.items() if n] + sorted(self.inherited_sources)
        if not kinds and self.pool not in (None, CALLER_POOL):
            return "poisson"
        return sampling_label(kinds)

    def live_epsilon(self) -> float | None:
        """A cheap upper bound on the pool's ε after the latest step (RDP, or an exact value already known)."""
        if self.dp is None:
            return None
        comp = self.pool_composition()
        if comp.unprotected_steps:
            return float("inf")
        eps = self._rdp.epsilon(comp, self.dp.target_delta)
        key = (comp.poisson, comp.gaussian_mu2, 0, self.dp.target_delta, self.accountant_name)
        if key in self._exact:
            eps = min(eps, self._exact[key].epsilon)
        live = self._live
        if live is not None and self.sigma is not None and self.sample_rate is not None:
            k = _extra_steps(live.base, comp, self.sigma, self.sample_rate)
            if k is None:  # another client charged the pool: rebuild on the new base
                self._start_live(comp)
            else:
                exact = live.exact(k)
                if exact is None:  # not ready yet (rare): wait briefly, it is a few ms of work
                    live.prefetch(k)
                    import time

                    deadline = time.monotonic() + 0.25
                    while exact is None and time.monotonic() < deadline:
                        time.sleep(0.002)
                        exact = live.exact(k)
                if exact is not None:
                    eps = min(eps, exact)
                live.prefetch(k + 1)  # the next step's value, computed while it trains
        if self._headroom is not None and self.target is not None and self.sigma is not None \
                and self.sample_rate is not None and eps > self.target:
            # Within the admitted headroom the exact ε is <= target by construction.
            k = _extra_steps(self._headroom[0], comp, self.sigma, self.sample_rate)
            if k is not None and k <= self._headroom[1]:
                eps = min(eps, self.target)
        return eps

    def close(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None

    def epsilon_report(self, comp: Composition | None = None) -> accounting.EpsilonReport | None:
        if self.dp is None:
            return None
        comp = self.pool_composition() if comp is None else comp
        if comp.empty:
            return accounting.EpsilonReport(0.0, self.accountant_name, 0.0, 0.0, None)
        return self._report(comp)

    def remaining_steps(self) -> int | None:
        """How many more Poisson steps of this client fit in the budget (None without a target)."""
        if self.dp is None or self.target is None or self.sigma is None or self.sample_rate is None:
            return None
        comp = self.pool_composition()
        if comp.unprotected_steps:
            return 0
        if self._headroom is not None:
            extra = _extra_steps(self._headroom[0], comp, self.sigma, self.sample_rate)
            if extra is not None:
                return max(0, self._headroom[1] - extra)
        room = accounting.max_steps_within(
            noise_multiplier=self.sigma, sample_rate=self.sample_rate, target_epsilon=self.target,
            delta=self.dp.target_delta, accountant=self.accountant_name, prior=list(comp.poisson),
            prior_mu2=comp.gaussian_mu2)
        self._headroom = (comp, room)
        return room

    def accounting_valid(self) -> tuple[bool, list[str]]:
        """True only when every step of the pool's record came from library draws used once, noise secret."""
        notes: list[str] = []
        if self.dp is None:
            return False, ["differential privacy is off (dp_config=None): no guarantee."]
        valid = True
        comp = self.pool_composition()
        if comp.unprotected_steps:
            valid = False
            notes.append(f"{comp.unprotected_steps} steps on this data set were taken WITHOUT differential privacy "
                         "(a client with dp_config=None): no finite ε holds for it any more.")
        if self.sampling() not in ("poisson", "none") or comp.gaussian_mu2 > 0:
            valid = False
            notes.append("some steps used caller-supplied batches: their ε is accounted by participation count "
                         "without amplification (μ-GDP), which holds only if which steps a record takes part in "
                         "does not depend on any record's contents and removing a record leaves the other "
                         "batches unchanged. The library cannot check that: accounting_valid is False.")
        if self.noise_fixed:
            valid = False
            notes.append("the noise seed was fixed by the caller: anyone who knows it can remove the noise.")
        elif self.inherited_noise_fixed:
            valid = False
            notes.append("the loaded checkpoint was trained with a noise seed fixed by the caller: anyone who knows "
                         "it can remove that noise from these weights.")
        elif comp.noise_known_clients:
            valid = False
            notes.append(f"{comp.noise_known_clients} client(s) trained on this data set with a noise seed fixed by "
                         "the caller: anyone who knows it can remove their noise, so the data set's ε is not a "
                         "valid guarantee any more.")
        return valid, notes

    def state_dict(self) -> dict[str, Any]:
        """This client's provenance (for a checkpoint's run record). Loading it never lowers any ε."""
        return {"client_id": self.client_id, "steps": self.steps, "sources": dict(self.sources),
                "own": self.own.to_dict(), "pool": self.pool, "sigma": self.sigma, "sample_rate": self.sample_rate,
                "noise_fixed": self.noise_known(), "inherited_sources": sorted(self.inherited_sources)}


def _extra_steps(base: Composition, comp: Composition, sigma: float, q: float) -> int | None:
    """If ``comp`` is ``base`` plus k steps of (σ, q) and nothing else, return k; else None."""
    if comp.gaussian_mu2 != base.gaussian_mu2:
        return None
    b = {(s, qq): n for s, qq, n in base.poisson}
    c = {(s, qq): n for s, qq, n in comp.poisson}
    key = (float(sigma), float(q))
    k = c.get(key, 0) - b.get(key, 0)
    if k < 0:
        return None
    b[key] = c.get(key, 0)
    if {kk: v for kk, v in b.items() if v} != {kk: v for kk, v in c.items() if v}:
        return None
    return k

