"""The reported ε against independent accountants; σ calibration; the budget boundary."""

from __future__ import annotations

import pytest

from tinker_nb import accounting
from tinker_nb.errors import ConfigError


@pytest.mark.parametrize("sigma,q,steps", [(1.0, 0.01, 1000), (0.8, 1024 / 50000, 146), (1.1, 256 / 60000, 14063)])
def test_pld_matches_opacus_prv_within_1_percent(sigma, q, steps):
    from opacus.accountants import PRVAccountant

    ours = accounting.epsilon([(sigma, q, steps)], delta=1e-5, accountant="pld")
    prv = PRVAccountant()
    for _ in range(1):
        prv.history = [(sigma, q, steps)]
    theirs = prv.get_epsilon(1e-5)
    assert abs(ours - theirs) / theirs < 0.01


def test_rdp_matches_opacus_rdp():
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(1.0, 0.01, 1000)]
    ours = accounting.epsilon([(1.0, 0.01, 1000)], delta=1e-5, accountant="rdp")
    assert abs(ours - acc.get_epsilon(1e-5)) / ours < 0.01


def test_live_rdp_equals_batch_rdp_and_bounds_pld():
    live = accounting.LiveRDP(1.0, 0.02)
    live.step(300)
    batch = accounting.epsilon([(1.0, 0.02, 300)], delta=1e-5, accountant="rdp")
    assert live.epsilon(1e-5) == pytest.approx(batch, rel=1e-3)
    assert live.epsilon(1e-5) >= accounting.epsilon([(1.0, 0.02, 300)], delta=1e-5, accountant="pld")


def test_live_bound_is_an_upper_bound_tightened_by_exact_anchors():
    sigma, q, delta, target = 1.0, 0.02, 1e-5, 4.0
    anchors: dict[int, float] = {}
    m = accounting.max_steps_within(noise_multiplier=sigma, sample_rate=q, target_epsilon=target, delta=delta,
                                    evaluated=anchors)
    assert m in anchors and anchors[m] <= target
    live = accounting.LiveRDP(sigma, q, anchors=anchors, anchor_delta=delta)
    for steps in (1, 7, m // 2, m - 3, m):
        live.steps = steps
        exact = accounting.report([(sigma, q, steps)], delta=delta).epsilon
        assert exact - 1e-9 <= live.bound(delta) <= live.epsilon(delta) + 1e-12
    # Within the budget the live value never shows more than the target (RDP alone would).
    live.steps = m
    assert live.epsilon(delta) > target >= live.bound(delta)
    # Anchors for another δ are not used.
    assert live.bound(1e-6) == live.epsilon(1e-6)


@pytest.mark.parametrize("target", [1.0, 8.0])
def test_calibration_reaches_target_within_1_percent(target):
    q, steps = 0.02, 150
    sigma = accounting.calibrate_noise_multiplier(target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps)
    eps = accounting.epsilon([(sigma, q, steps)], delta=1e-5)
    assert eps <= target
    assert eps >= 0.99 * target


def test_max_steps_is_the_exact_boundary():
    m = accounting.max_steps_within(noise_multiplier=1.0, sample_rate=0.05, target_epsilon=2.0, delta=1e-5)
    assert accounting.report([(1.0, 0.05, m)], delta=1e-5).epsilon <= 2.0
    assert accounting.report([(1.0, 0.05, m + 1)], delta=1e-5).epsilon > 2.0


def test_history_composition_is_additive_in_steps():
    a = accounting.epsilon([(1.0, 0.05, 10), (1.0, 0.05, 20)], delta=1e-5)
    b = accounting.epsilon([(1.0, 0.05, 30)], delta=1e-5)
    assert a == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize("kw", [dict(sigma=0.0, q=0.1), dict(sigma=1.0, q=0.0), dict(sigma=1.0, q=1.5)])
def test_bad_parameters_are_refused(kw):
    with pytest.raises(ConfigError):
        accounting.epsilon([(kw["sigma"], kw["q"], 10)], delta=1e-5)


def test_bad_delta_and_accountant():
    with pytest.raises(ConfigError, match="delta"):
        accounting.epsilon([(1.0, 0.1, 10)], delta=1.0)
    with pytest.raises(ConfigError, match="accountant"):
        accounting.epsilon([(1.0, 0.1, 10)], delta=1e-5, accountant="gdp")
    assert accounting.epsilon([], delta=1e-5) == 0.0
