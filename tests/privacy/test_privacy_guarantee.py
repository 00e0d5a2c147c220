"""Issue 10: no public call can make the reported ε or accounting_valid understate what was released.

One test per finding; each failed on the code before the privacy-state rework.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tinker_nb import (
    BudgetExceededError,
    ConfigError,
    DataError,
    DPConfig,
    ServiceClient,
    StateError,
    TrainingConfig,
    accounting,
)

from .helpers import RECORDS, dp_config, step


def _eps(steps: int, cfg: TrainingConfig, n: int = len(RECORDS)) -> float:
    dp = cfg.dp_config
    return accounting.report([(dp.noise_multiplier, cfg.batch_size / n, steps)], delta=dp.target_delta).epsilon


# -- 1. load_state never rolls the budget back nor replays noise -----------------------------------
def test_load_state_keeps_the_budget_and_never_restores_randomness(tiny_model, tmp_path):
    cfg = dp_config(tiny_model)
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(cfg)
    tc.attach_dataset(RECORDS)
    saved = tc.save_state("before")
    loop = tc.poisson_batches(steps=2)
    step(tc, next(loop))
    tc.load_state(saved.artifact_id)
    m = tc.get_dp_metrics()
    assert m.steps == 1 and m.dataset_steps == 1 and m.epsilon_spent == pytest.approx(_eps(1, cfg))
    step(tc, next(loop))
    m = tc.get_dp_metrics()
    assert m.steps == 2 and m.dataset_steps == 2
    assert m.epsilon_spent == pytest.approx(_eps(2, cfg)) and m.accounting_valid
    # the checkpoint holds no generator state at all
    blobs, _, _ = svc.store.load(saved.artifact_id)
    assert set(blobs) <= {"adapter.safetensors", "optimizer.safetensors", "state.json"}
    tc.close()


def test_noise_is_fresh_after_load_state_even_for_the_same_batch(tiny_model, tmp_path):
    """The old attack: W_A - W_B was the noiseless clipped sum, because load_state replayed the noise."""
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model, learning_rate=1e-3))
    batch = RECORDS[:4]  # caller-supplied, so both steps see exactly the same examples
    saved = tc.save_state("w0", include_optimizer=True)
    w0 = tc.adapter_state_dict()
    tc.forward_backward(batch)
    tc.optim_step().result()
    w_a = tc.adapter_state_dict()
    tc.load_state(saved.artifact_id)
    assert all(torch.equal(w0[k], v) for k, v in tc.adapter_state_dict().items())
    tc.forward_backward(batch)
    tc.optim_step().result()
    w_b = tc.adapter_state_dict()
    assert any(not torch.allclose(w_a[k], w_b[k]) for k in w_a), "the second release replayed the first's noise"
    m = tc.get_dp_metrics()
    assert m.steps == 2 and m.sampling == "caller-supplied" and not m.accounting_valid
    # both steps of the same 4 records: μ² = 2/σ² for each of them
    assert m.caller_supplied_mu2 == pytest.approx(2.0)
    assert m.epsilon_spent == pytest.approx(accounting.gaussian_mu2_epsilon(2.0, delta=1e-3), rel=1e-2)
    tc.close()


# -- 2. a draw is used once, unaltered ---------------------------------------------------------------
def test_a_draw_trains_exactly_once_and_cannot_be_altered(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model))
    tc.attach_dataset(RECORDS)
    d1, d2 = list(tc.poisson_batches(steps=2))
    with pytest.raises(DataError, match="opaque"):
        d1["input_ids"] = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(DataError, match="opaque"):
        _ = d1["input_ids"]
    tc.forward_backward(d1).result()
    with pytest.raises(DataError, match="already used"):
        tc.forward_backward(d1).result()
    tc.optim_step().result()
    with pytest.raises(DataError, match="already used"):  # one yielded batch fed to a second step
        tc.forward_backward(d1).result()
    step(tc, d2)
    m = tc.get_dp_metrics()
    assert m.steps == 2 and m.dataset_steps == 2 and m.accounting_valid
    tc.close()


def test_draws_of_another_client_or_an_old_loop_are_refused(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    a = svc.create_training_client(dp_config(tiny_model))
    b = svc.create_training_client(dp_config(tiny_model))
    a.attach_dataset(RECORDS)
    b.attach_dataset(RECORDS)
    da = next(a.poisson_batches(steps=1))
    with pytest.raises(DataError, match="another training client"):
        b.forward_backward(da).result()
    old = next(a.poisson_batches(steps=3))
    _ = a.poisson_batches(steps=3)  # a new loop drops the unused draws of the last one
    with pytest.raises(DataError, match="earlier poisson_batches"):
        a.forward_backward(old).result()
    assert a.get_dp_metrics().dataset_steps == 0  # refused draws charge nothing
    a.close()
    b.close()


# -- 3. draws are tied to steps ----------------------------------------------------------------------
def test_draws_must_be_used_in_order_and_one_per_step(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model))
    tc.attach_dataset(RECORDS)
    draws = list(tc.poisson_batches(steps=20))
    assert not hasattr(draws[0], "indices") and "examples" not in repr(draws[0])  # nothing to pick the largest by
    with pytest.raises(DataError, match="out of order"):
        tc.forward_backward(draws[4]).result()
    tc.forward_backward(draws[0]).result()
    with pytest.raises(StateError, match="optim_step"):  # a second draw in the same step
        tc.forward_backward(draws[1]).result()
    tc.optim_step().result()
    with pytest.raises(StateError, match="nothing drawn"):  # no free noise-only steps either
        tc.optim_step().result()
    assert tc.get_dp_metrics().dataset_steps == 1
    tc.close()


# -- 4. the budget belongs to the data set ----------------------------------------------------------
def test_budget_is_the_data_sets_across_clients_and_restarts(tiny_model, tmp_path):
    cfg = dp_config(tiny_model)
    ws = tmp_path / "ws"
    svc = ServiceClient(ws, passphrase="p")
    a = svc.create_training_client(cfg)
    a.attach_dataset(RECORDS)
    for d in a.poisson_batches(steps=3):
        step(a, d)
    eps_a = a.get_dp_metrics().epsilon_spent
    a.close()
    svc2 = ServiceClient(ws, passphrase="p")  # a new "kernel"
    b = svc2.create_training_client(cfg)
    b.attach_dataset(list(RECORDS))
    m = b.get_dp_metrics()
    assert m.steps == 0 and m.dataset_steps == 3 and m.epsilon_spent == pytest.approx(eps_a)
    assert m.client_epsilon == 0.0
    step(b, next(b.poisson_batches(steps=1)))
    m = b.get_dp_metrics()
    assert m.dataset_steps == 4 and m.epsilon_spent == pytest.approx(_eps(4, cfg))
    assert m.client_epsilon == pytest.approx(_eps(1, cfg))
    # other data is another budget
    c = svc2.create_training_client(cfg)
    c.attach_dataset(RECORDS[:-1] + ["something else entirely"])
    assert c.get_dp_metrics().dataset_steps == 0
    b.close()
    c.close()


def test_attaching_a_spent_data_set_is_refused(tiny_model, tmp_path):
    cfg = dp_config(tiny_model, dp_config=DPConfig(noise_multiplier=1.0, target_epsilon=2.0, target_delta=1e-3))
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    a = svc.create_training_client(cfg)
    a.attach_dataset(RECORDS)
    with pytest.raises(BudgetExceededError):
        for d in a.poisson_batches(steps=500):
            tc_ = a
            tc_.forward_backward(d)
            tc_.optim_step()
        a.get_dp_metrics()
    spent = a.get_dp_metrics()
    assert spent.epsilon_spent <= 2.0
    n = svc.ledger.size()
    b = svc.create_training_client(cfg)
    with pytest.raises(BudgetExceededError, match="budget is spent"):
        b.attach_dataset(RECORDS)
    assert b.get_dp_metrics().dataset_size is None  # nothing attached
    assert svc.odometer.composition("default", spent.pool).steps == spent.dataset_steps
    assert svc.ledger.size() == n + 1  # only b's create_training_client entry
    a.close()
    b.close()


# -- 5. randomness ----------------------------------------------------------------------------------
def test_noise_and_sampling_streams_are_not_brute_forceable():
    from tinker_nb.engine.noise import GaussianNoise, KeyStream, SecureBernoulli

    s = 12345
    a = GaussianNoise.seeded(s).normal((64,), 1.0)
    b = GaussianNoise.seeded(s + 2**32).normal((64,), 1.0)
    assert not torch.equal(a, b)  # torch's CPU generator keeps only the low 32 bits of a seed
    # sampling coins and noise use independent keys even from one seed
    n1 = GaussianNoise.seeded(s)._stream.words(8)
    c1 = SecureBernoulli.seeded(s)._stream.words(8)
    assert not (n1 == c1).all()
    # the default keys come from the OS: two streams differ
    assert not (KeyStream().words(4) == KeyStream().words(4)).all()
    assert "key" not in repr(KeyStream()).lower().replace("keystream", "")


def test_secure_gaussian_is_gaussian_and_sampler_uses_full_precision():
    from scipy import stats

    from tinker_nb.engine.noise import GaussianNoise, SecureBernoulli

    z = GaussianNoise.secure().normal((200_000,), 2.0).double().numpy()
    assert abs(z.mean()) < 0.03 and abs(z.std() - 2.0) < 0.02
    assert stats.kstest(z / 2.0, "norm").pvalue > 1e-4
    q = 1e-9
    assert SecureBernoulli.threshold(q) == math.floor(q * 2**64)  # exact, no float32 rounding
    assert SecureBernoulli.threshold(1.0) == 2**64
    m = SecureBernoulli.secure().mask(400_000, 0.25)
    assert abs(m.mean() - 0.25) < 0.005


def test_fixed_noise_seed_marks_the_run_invalid(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model), noise_seed=7)
    tc.attach_dataset(RECORDS)
    step(tc, next(tc.poisson_batches(steps=1)))
    m = tc.get_dp_metrics()
    assert not m.accounting_valid and any("seed" in n for n in m.notes)
    tc.close()


# -- 6. configuration captured once -----------------------------------------------------------------
def test_mutating_the_config_after_creation_changes_nothing(tiny_model, tmp_path):
    cfg = dp_config(tiny_model)
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(cfg)
    tc.attach_dataset(RECORDS)
    object.__setattr__(cfg.dp_config, "max_grad_norm", 100.0)
    object.__setattr__(cfg.dp_config, "noise_multiplier", 0.01)
    tc.forward_backward(next(tc.poisson_batches(steps=1)))
    res = tc.optim_step().result()
    assert res.noise_std == pytest.approx(1.0)  # σ·C of the config as it was at creation
    assert tc.get_dp_metrics().max_grad_norm == 1.0
    tc.close()


# -- 7. accounting edges ----------------------------------------------------------------------------
def test_max_steps_within_verifies_the_search_limit():
    kw = dict(noise_multiplier=2.0, sample_rate=0.01, delta=1e-5)
    e600 = accounting.report([(2.0, 0.01, 600)], delta=1e-5).epsilon
    e1000 = accounting.report([(2.0, 0.01, 1000)], delta=1e-5).epsilon
    target = (e600 + e1000) / 2
    t = accounting.max_steps_within(target_epsilon=target, limit=1000, **kw)
    assert 600 <= t < 1000
    assert accounting.report([(2.0, 0.01, t)], delta=1e-5).epsilon <= target
    assert accounting.report([(2.0, 0.01, t + 1)], delta=1e-5).epsilon > target


def test_reported_epsilon_is_never_above_rdp():
    rep = accounting.report([(2.0, 1e-3, 100_000)], delta=1e-6)
    assert rep.epsilon <= rep.epsilon_rdp
    rdp = accounting.epsilon([(2.0, 1e-3, 100_000)], delta=1e-6, accountant="rdp")
    assert rep.epsilon <= rdp


def test_pld_interval_adapts_to_the_size_of_epsilon():
    small_sigma = accounting.pld_interval([(0.3, 0.1, 1000)], 0.0, 1e-5)
    long_run = accounting.pld_interval([(2.0, 1e-3, 100_000)], 0.0, 1e-6)
    assert small_sigma == 1e-2 and long_run < 1e-3


def test_caller_supplied_accounting_is_exact_gdp():
    for mu2 in (0.25, 1.0, 4.0):
        rep = accounting.report([], delta=1e-5, gaussian_mu2=mu2)
        assert rep.epsilon == pytest.approx(accounting.gaussian_mu2_epsilon(mu2, delta=1e-5), rel=2e-3)


# -- 8. engine and futures edges ----------------------------------------------------------------------
def test_half_failed_backward_leaves_nothing_for_the_next_step(tiny_model, tmp_path, monkeypatch):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model, dp_config=None))
    s = tc.session
    real = s.acc.absorb
    calls = {"n": 0}

    def fail_once(n):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated failure half-way")
        return real(n)

    monkeypatch.setattr(s.acc, "absorb", fail_once)
    with pytest.raises(RuntimeError):
        tc.forward_backward(RECORDS[:2]).result()
    assert all(getattr(p, "grad_sample", None) is None and p.grad is None for p in s.acc.params)
    assert all(float(x.abs().sum()) == 0 for x in s.acc.sums) and s.acc.examples == 0
    tc.forward_backward(RECORDS[:2]).result()
    assert s.acc.examples == 2
    tc.close()


def test_caught_budget_error_is_raised_once_and_keeps_its_type(tiny_model, tmp_path):
    cfg = dp_config(tiny_model, dp_config=DPConfig(noise_multiplier=1.0, target_epsilon=2.0, target_delta=1e-3))
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(cfg)
    tc.attach_dataset(RECORDS)
    caught = 0
    for d in tc.poisson_batches(steps=300):
        try:
            tc.forward_backward(d)
            tc.optim_step()
        except BudgetExceededError:
            caught += 1
            break
    else:
        with pytest.raises(BudgetExceededError):
            tc.get_dp_metrics()
        caught += 1
    assert caught == 1
    m = tc.get_dp_metrics()  # the error reached the caller once; the next call runs normally
    assert m.epsilon_spent <= 2.0
    # a refusal observed through its future is not raised again either
    d = next(tc.poisson_batches(steps=1))
    fut = tc.forward_backward(d)
    with pytest.raises(BudgetExceededError):
        fut.result()
    assert tc.get_dp_metrics().dataset_steps == m.dataset_steps
    tc.close()


def test_skipped_operations_keep_the_failures_type():
    from tinker_nb.futures import OrderedWorker

    w = OrderedWorker("t")
    gate = __import__("threading").Event()

    def refuse():
        gate.wait(5)
        raise BudgetExceededError("over budget")

    f1 = w.submit("forward_backward", refuse)
    f2 = w.submit("optim_step", lambda: 1)
    gate.set()
    with pytest.raises(BudgetExceededError):
        f2.result()
    with pytest.raises(BudgetExceededError):
        f1.result()
    assert w.submit("op", lambda: 5).result() == 5
    w.shutdown()


def test_adapter_state_dict_is_a_cpu_copy_under_peft_names(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model, dp_config=None))
    sd = tc.adapter_state_dict()
    assert sd and all(k.startswith("base_model.model.") and "lora_" in k for k in sd)
    assert all(v.device.type == "cpu" for v in sd.values())
    k = next(iter(sd))
    sd[k].add_(1.0)
    assert not torch.equal(sd[k], tc.adapter_state_dict()[k])  # a copy
    tc.close()


def test_caller_supplied_dp_without_data_set_needs_sigma(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model, dp_config=DPConfig(target_epsilon=5.0, target_delta=1e-5)))
    with pytest.raises(ConfigError, match="noise_multiplier"):
        tc.forward_backward(RECORDS[:2]).result()
    tc.close()


def test_live_epsilon_moves_every_step_and_is_exact_within_the_budget(tmp_path):
    """The step events' ε: the exact PLD value of the pool after each step (computed one step ahead), never
    above the target before the refusal, and moving every step (no plateaus)."""
    import time

    from tinker_nb.privacy import PrivacyAccountant, PrivacyOdometer

    acct = PrivacyAccountant(dp=DPConfig(noise_multiplier=1.0, target_epsilon=3.0, target_delta=1e-5), batch_size=8,
                             odometer=PrivacyOdometer(tmp_path / "p.sqlite"), tenant="t", client_id="c",
                             noise_fixed=False)
    acct.bind_dataset(digest="ab" * 32, size=250)
    values = []
    while True:
        try:
            acct.charge_draw()
        except BudgetExceededError:
            break
        acct.end_step()
        time.sleep(0.005)
        values.append(acct.live_epsilon())
    assert len(values) > 100 and len(set(values)) == len(values)  # moves every step
    assert all(b > a for a, b in itertools.pairwise(values))
    assert max(values) <= 3.0
    exact = [accounting.report([(1.0, 8 / 250, k)], delta=1e-5).epsilon for k in (1, 50, len(values))]
    for k, e in zip((1, 50, len(values)), exact):
        assert values[k - 1] == pytest.approx(e, rel=2e-3)  # both pessimistic PLD bounds
        assert values[k - 1] <= accounting.report([(1.0, 8 / 250, k)], delta=1e-5).epsilon_rdp
    acct.close()


def test_a_non_dp_client_on_the_same_data_makes_its_epsilon_unbounded(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    dp_client = svc.create_training_client(dp_config(tiny_model))
    dp_client.attach_dataset(RECORDS)
    step(dp_client, next(dp_client.poisson_batches(steps=1)))
    plain = svc.create_training_client(dp_config(tiny_model, dp_config=None))
    plain.attach_dataset(RECORDS)
    step(plain, next(plain.poisson_batches(steps=1)))
    m = dp_client.get_dp_metrics()
    assert m.epsilon_spent == float("inf") and not m.accounting_valid
    assert any("WITHOUT differential privacy" in n for n in m.notes)
    with pytest.raises(BudgetExceededError):  # no DP step fits any more
        dp_client.forward_backward(next(dp_client.poisson_batches(steps=1))).result()
    late = svc.create_training_client(dp_config(tiny_model))
    with pytest.raises(BudgetExceededError, match="WITHOUT differential privacy"):
        late.attach_dataset(RECORDS)
    from tinker_nb import PackageError
    from tinker_nb.security.kem import RecipientIdentity

    with pytest.raises(PackageError, match="no DP certificate"):  # a certificate cannot claim a finite ε
        dp_client.package(tmp_path / "m.tgsp", recipients=[RecipientIdentity.generate().public_key()])
    assert not (tmp_path / "m.tgsp").exists()
    for tc in (dp_client, plain, late):
        tc.close()


def test_a_superset_run_also_charges_the_subsets_own_budget(tiny_model, tmp_path):
    """An audit on real data attaches data + canaries: every step must also be charged to the data's own pool."""
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    subset = RECORDS[:30]
    tc = svc.create_training_client(dp_config(tiny_model))
    tc.attach_dataset(RECORDS, charge_also=subset)
    for d in tc.poisson_batches(steps=2):
        step(tc, d)
    other = svc.create_training_client(dp_config(tiny_model, batch_size=3))
    other.attach_dataset(subset)
    assert other.get_dp_metrics().dataset_steps == 2  # the subset's own pool holds both steps
    with pytest.raises(DataError, match="charge_also"):
        svc.create_training_client(dp_config(tiny_model)).attach_dataset(RECORDS[:10], charge_also=["not in it"])
    tc.close()
    other.close()
