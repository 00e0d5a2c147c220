"""The one-run bound, the MIA view and exposure against hand-computed cases and simulations (torch-free)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from tinker_nb.errors import ConfigError, DataError, TinkerError
from tinker_nb.privacy_audit import stats as S

# (m, r, v, delta, beta) -> epsilon_lower, computed independently (shared/notes/privacy_auditing.md §6).
HAND = [
    ((1000, 100, 80, 1e-5, 0.05), 0.9553),
    ((1000, 100, 80, 0.0, 0.05), 0.9584),
    ((1000, 100, 100, 1e-5, 0.05), 3.4654),
    ((1000, 1000, 1000, 1e-5, 0.05), 5.7823),
    ((1000, 500, 400, 1e-5, 0.05), 1.1980),
    ((200, 40, 40, 1e-5, 0.05), 2.5482),
    ((1000, 100, 58, 1e-5, 0.05), 0.0),
    ((100000, 100, 80, 1e-5, 0.05), 0.0),
    ((1000, 100, 80, 1e-5, 0.01), 0.794),
    ((1000, 100, 80, 1e-5, 0.005), 0.731),   # Bonferroni over 10 choices at beta = 0.05
    ((10000, 100, 80, 1e-5, 0.05), 0.926),
    ((1000, 100, 60, 1e-5, 0.05), 0.050),
]


@pytest.mark.parametrize("args,expected", HAND)
def test_hand_cases(args, expected):
    m, r, v, delta, beta = args
    assert S.epsilon_lower_bound(m, r, v, delta=delta, confidence=1 - beta) == pytest.approx(expected, abs=6e-4)


def _appendix_d_p_value(m, r, v, eps, delta):
    """Line-by-line transcription of the paper's Appendix D p_value_DP_audit (loops, no vectorisation)."""
    q = 1 / (1 + math.exp(-eps))
    beta = st.binom.sf(v - 1, r, q)
    alpha = 0.0
    total = 0.0
    pmf = st.binom.pmf(np.arange(v + 1), r, q)  # pmf[k] = P[B = k], looked up in the loop below
    for i in range(1, v + 1):
        total += pmf[v - i]
        if total > i * alpha:
            alpha = total / i
    return min(beta + alpha * delta * 2 * m, 1)


def _appendix_d_eps(m, r, v, delta, p):
    eps_min, eps_max = 0.0, 1.0
    while _appendix_d_p_value(m, r, v, eps_max, delta) < p:
        eps_max += 1
    for _ in range(30):
        eps = (eps_min + eps_max) / 2
        if _appendix_d_p_value(m, r, v, eps, delta) < p:
            eps_min = eps
        else:
            eps_max = eps
    return eps_min


def test_matches_appendix_d_transcription():
    rng = np.random.default_rng(0)
    for _ in range(25):
        m = int(rng.integers(10, 800))
        r = int(rng.integers(1, m + 1))
        v = int(rng.integers(0, r + 1))
        delta = float(rng.choice([0.0, 1e-6, 1e-5, 1e-4]))
        eps = float(rng.uniform(0, 6))
        assert S.one_run_p_value(m, r, v, eps, delta) == pytest.approx(_appendix_d_p_value(m, r, v, eps, delta),
                                                                       rel=1e-9, abs=1e-12)
        if _appendix_d_p_value(m, r, v, 0.0, delta) < 0.05:
            ours = S.epsilon_lower_bound(m, r, v, delta=delta, confidence=0.95)
            assert ours == pytest.approx(_appendix_d_eps(m, r, v, delta, 0.05), abs=1e-7)


def test_bound_sits_on_the_confidence_level():
    eps = S.epsilon_lower_bound(1000, 100, 80, delta=1e-5, confidence=0.95)
    assert S.one_run_p_value(1000, 100, 80, eps, 1e-5) < 0.05 <= S.one_run_p_value(1000, 100, 80, eps + 1e-6, 1e-5)
    # At the bound: binomial tail 0.0486 + delta term 0.0014 (notes §1.5).
    q = 1 / (1 + math.exp(-eps))
    assert st.binom.sf(79, 100, q) == pytest.approx(0.0486, abs=2e-4)


def test_more_evidence_gives_a_larger_bound_and_delta_costs():
    vals = [S.epsilon_lower_bound(1000, 100, v, delta=1e-5) for v in (60, 70, 80, 90, 100)]
    assert vals == sorted(vals) and vals[0] < vals[-1]
    assert S.epsilon_lower_bound(1000, 100, 80, delta=0.0) > S.epsilon_lower_bound(1000, 100, 80, delta=1e-5)
    # Ceiling ~ ln(r / ln(1/beta)) when every guess is right (notes §1.5).
    for r, want in ((10, 1.02), (100, 3.47), (200, 4.17)):
        assert S.ceiling_epsilon(1000, r, delta=1e-5) == pytest.approx(want, abs=0.01)


def test_no_evidence_gives_zero():
    assert S.epsilon_lower_bound(100, 0, 0) == 0.0
    assert S.epsilon_lower_bound(100, 50, 25) == 0.0
    assert S.epsilon_lower_bound(100, 50, 0) == 0.0


def _randomized_response_bounds(eps, m, reps, rng, delta=0.0):
    """A mechanism with known epsilon: each coin is reported truthfully w.p. e^eps/(1+e^eps)."""
    p_true = math.exp(eps) / (1 + math.exp(eps))
    out = []
    for _ in range(reps):
        coins = rng.random(m) < 0.5
        truthful = rng.random(m) < p_true
        reported = np.where(truthful, coins, ~coins)
        scores = reported + 1e-3 * rng.standard_normal(m)  # the attacker sees only the mechanism's output
        b = S.one_run_audit(scores, coins, k_pos=int(reported.sum()), k_neg=m - int(reported.sum()),
                            delta=delta, confidence=0.95, rng=rng)
        assert b.guesses == m
        out.append(b.epsilon_lower)
    return np.array(out)


@pytest.mark.parametrize("eps,median_want", [(1.0, 0.88), (2.0, 1.84), (4.0, 3.60)])
def test_randomized_response_simulation(eps, median_want):
    """The bound stays below the true epsilon at the stated confidence, and is close to it for a strong signal."""
    rng = np.random.default_rng(int(eps * 1000))
    reps, beta = 200, 0.05
    bounds = _randomized_response_bounds(eps, 1000, reps, rng)
    violation = float(np.mean(bounds > eps))
    assert violation <= beta + 3 * math.sqrt(beta * (1 - beta) / reps)
    assert float(np.median(bounds)) == pytest.approx(median_want, abs=0.12)
    assert float(np.median(bounds)) >= 0.85 * eps  # a perfect attacker on a tight mechanism recovers most of it


def test_randomized_response_with_delta_is_still_valid():
    rng = np.random.default_rng(7)
    bounds = _randomized_response_bounds(2.0, 1000, 100, rng, delta=1e-5)
    assert float(np.mean(bounds > 2.0)) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 100)


def test_gaussian_scores_with_abstentions_stay_below_gdp_epsilon():
    """Scores mu*1[in] + N(0,1) are mu-GDP; top/bottom 50 guesses must not exceed eps(delta) of mu-GDP."""
    mu, delta = 1.0, 1e-5
    # eps(delta) of mu-GDP: delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), solved numerically.
    from scipy.optimize import brentq

    true_eps = brentq(lambda e: st.norm.cdf(-e / mu + mu / 2) - math.exp(e) * st.norm.cdf(-e / mu - mu / 2) - delta,
                      0, 20)
    assert true_eps == pytest.approx(4.38, abs=0.02)
    rng = np.random.default_rng(3)
    bounds = []
    for _ in range(60):
        inc = rng.random(1000) < 0.5
        scores = mu * inc + rng.standard_normal(1000)
        bounds.append(S.one_run_audit(scores, inc, k_pos=50, k_neg=50, delta=delta, rng=rng).epsilon_lower)
    assert max(bounds) < true_eps
    assert 1.2 < float(np.median(bounds)) < 2.1  # notes §6: median 1.63


def test_grid_is_bonferroni_corrected():
    rng = np.random.default_rng(1)
    inc = rng.random(400) < 0.5
    scores = 2.0 * inc + rng.standard_normal(400)
    grid = S.default_guess_grid(400)
    b = S.one_run_audit(scores, inc, delta=1e-5, confidence=0.95, rng=0)
    assert b.grid == grid and b.correction == f"bonferroni/{len(grid)}"
    for row in b.per_choice:
        assert row["epsilon_lower"] == pytest.approx(
            S.epsilon_lower_bound(400, row["guesses"], row["correct"], delta=1e-5, confidence=1 - 0.05 / len(grid)))
    assert b.epsilon_lower == max(r["epsilon_lower"] for r in b.per_choice)
    single = S.one_run_audit(scores, inc, k_pos=b.k_pos, k_neg=b.k_neg, delta=1e-5, rng=0)
    assert single.epsilon_lower >= b.epsilon_lower and single.correction == "none"


def test_guesses_and_counts():
    t = S.guesses_top_bottom([0.1, 5.0, -3.0, 2.0, 0.0], k_pos=2, k_neg=1, rng=0)
    assert t.tolist() == [0, 1, -1, 1, 0]
    assert S.count_correct(t, [False, True, False, False, True]) == (3, 2)
    # Ties are broken at random, not by position.
    firsts = {int(np.flatnonzero(S.guesses_top_bottom(np.zeros(10), 1, 0, rng=s))[0]) for s in range(40)}
    assert len(firsts) > 3


def test_default_grid_respects_the_prior():
    assert S.default_guess_grid(100) == [(5, 5), (12, 13), (25, 25), (50, 50)]
    assert S.default_guess_grid(1) == [(0, 1)] or S.default_guess_grid(1) == [(1, 0)]
    g = S.default_guess_grid(100, inclusion_prob=0.2)
    assert all(a + b <= 100 for a, b in g) and g[-1] == (20, 80)


def test_roc_auc_tpr_hand_cases():
    scores = [4.0, 3.0, 2.0, 1.0]
    inc = [True, False, True, False]
    fpr, tpr, thr = S.roc(scores, inc)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0, 0.5, 0.5, 1.0, 1.0]
    assert thr[0] == np.inf and thr.tolist()[1:] == [4.0, 3.0, 2.0, 1.0]
    assert S.auc(scores, inc) == pytest.approx(0.75)
    assert S.auc([1, 1, 1, 1], inc) == pytest.approx(0.5)
    assert S.auc([1.0, 0.0, 1.0, 0.0], inc) == pytest.approx(1.0)
    r = S.tpr_at_fpr(scores, inc, 0.01)
    assert r["tpr"] == 0.5 and r["fpr"] == 0.0 and r["measurable"] is False
    big = np.random.default_rng(0)
    inc2 = big.random(2000) < 0.5
    r2 = S.tpr_at_fpr(inc2 * 3.0 + big.standard_normal(2000), inc2, 0.01)
    assert r2["measurable"] and r2["fpr"] <= 0.01 and 0.3 < r2["tpr"] < 0.8


def test_exposure():
    ref = np.arange(100, dtype=float) + 10.0            # log-perplexities of 100 never-inserted secrets
    assert S.exposure_interpolation(0.0, ref)[0] == pytest.approx(math.log2(100))        # rank 1
    assert S.exposure_interpolation(10.0, ref)[0] == pytest.approx(math.log2(100 / 2))   # a tie counts the ref first
    assert S.exposure_interpolation(1e9, ref)[0] == pytest.approx(math.log2(100 / 101))
    rng = np.random.default_rng(0)
    refs = rng.normal(40, 3, 5000)
    # A never-inserted secret: chance level, E[exposure] ~ 1/ln 2 = 1.44 bits.
    fresh = rng.normal(40, 3, 2000)
    assert float(np.mean(S.exposure_interpolation(fresh, refs))) == pytest.approx(1 / math.log(2), abs=0.15)
    ext = S.exposure_extrapolation([40.0, 25.0], refs)
    assert ext[0] == pytest.approx(1.0, abs=0.1) and ext[1] > math.log2(5000)  # resolves beyond log2 N


def test_bad_inputs_are_tinker_errors():
    for c in (0, 1, 1.5, -0.1, float("nan"), True):
        with pytest.raises(ConfigError, match="confidence"):
            S.epsilon_lower_bound(10, 5, 5, confidence=c)
    with pytest.raises(ConfigError):
        S.epsilon_lower_bound(10, 5, 6)
    with pytest.raises(ConfigError):
        S.one_run_p_value(10, 11, 5, 1.0)
    with pytest.raises(ConfigError, match="delta"):
        S.one_run_p_value(10, 5, 5, 1.0, delta=1.0)
    with pytest.raises(DataError, match="at least one canary"):
        S.one_run_audit([], [])
    with pytest.raises(DataError):
        S.one_run_audit([1.0, float("nan")], [True, False])
    with pytest.raises(DataError):
        S.one_run_audit([1.0, 2.0], [True])
    with pytest.raises(ConfigError):
        S.one_run_audit([1.0, 2.0], [True, False], k_pos=2, k_neg=1)
    with pytest.raises(ConfigError):
        S.one_run_audit([1.0, 2.0], [True, False], k_pos=1)
    with pytest.raises(DataError):
        S.roc([1.0, 2.0], [True, True])
    with pytest.raises(ConfigError):
        S.tpr_at_fpr([1.0, 2.0], [True, False], 0.0)
    assert issubclass(ConfigError, TinkerError) and issubclass(DataError, TinkerError)


def test_prune_grid_drops_choices_that_cannot_certify():
    g = S.default_guess_grid(64)
    assert g[0] == (3, 3)
    pruned = S.prune_grid(64, g, delta=1e-5)
    assert (3, 3) not in pruned and pruned == [(8, 8), (16, 16), (32, 32)]
    for a, b in pruned:  # every kept choice can certify at the corrected level
        assert S.ceiling_epsilon(64, a + b, delta=1e-5, confidence=1 - 0.05 / len(pruned)) > 0
    assert S.prune_grid(4, S.default_guess_grid(4)) == [(2, 2)]  # nothing can certify: keep the strongest
