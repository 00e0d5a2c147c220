"""Statistics of a canary audit. Torch-free: numpy and scipy only.

Three views of the same per-canary scores (higher score = "more likely included"):

* **The certified number**: the one-run lower bound on ε of Steinke, Nasr and Jagielski, "Privacy Auditing
  with One (1) Training Run" (NeurIPS 2023, arXiv 2305.08846), with abstentions and the δ term, evaluated
  exactly as in the paper's Appendix D code (:func:`one_run_p_value`, :func:`epsilon_lower_bound`).
  If the training run is (ε, δ)-DP for add/remove-one adjacency, then ``P[ε_lower > ε] <= 1 - confidence``.
* **The membership-inference view**: ROC, AUC and TPR at a low FPR (:func:`roc`, :func:`auc`,
  :func:`tpr_at_fpr`). Descriptive only: in one run these numbers are not a bound.
* **Exposure** of "The Secret Sharer" (Carlini et al., USENIX Security 2019) for templated secrets
  (:func:`exposure_interpolation`, :func:`exposure_extrapolation`). A memorisation diagnostic, not an ε.

Every function validates its input and raises :class:`~tinker_nb.errors.ConfigError` (bad settings) or
:class:`~tinker_nb.errors.DataError` (bad scores or labels) with what was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as _st
from scipy.special import expit

from ..errors import ConfigError, DataError

__all__ = [
    "OneRunBound",
    "auc",
    "ceiling_epsilon",
    "count_correct",
    "default_guess_grid",
    "epsilon_lower_bound",
    "exposure_extrapolation",
    "exposure_interpolation",
    "guesses_top_bottom",
    "one_run_audit",
    "one_run_p_value",
    "prune_grid",
    "roc",
    "tpr_at_fpr",
]

_BISECTION_STEPS = 60  # the paper's code uses 30; 60 halvings of a unit interval are below float resolution


# ----------------------------------------------------------------------------- validation helpers
def _int(name: str, x: Any, lo: int = 0) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or int(x) < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {x!r}.")
    return int(x)


def _confidence(confidence: Any) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)) \
            or not (0.0 < float(confidence) < 1.0) or not math.isfinite(float(confidence)):
        raise ConfigError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}.")
    return float(confidence)


def _delta(delta: Any) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)) \
            or not (0.0 <= float(delta) < 1.0):
        raise ConfigError(f"delta must be a number in [0, 1), got {delta!r}.")
    return float(delta)


def _scores(scores: Any, name: str = "scores") -> np.ndarray:
    try:
        s = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a 1-D sequence of numbers.") from None
    if s.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {s.shape}.")
    if s.size == 0:
        raise DataError(f"{name} is empty: an audit needs at least one canary.")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{name} contains NaN or infinite values; every canary needs a finite score.")
    return s


def _labels(included: Any, m: int) -> np.ndarray:
    a = np.asarray(included)
    if a.ndim != 1 or a.size != m:
        raise DataError(f"included must be a 1-D sequence of {m} booleans (one per canary), got shape {a.shape}.")
    if a.dtype != bool:
        if not np.all(np.isin(a, [0, 1])):
            raise DataError("included must hold booleans (True = the canary was in the training data).")
        a = a.astype(bool)
    return a


# ----------------------------------------------------------------------------- the one-run bound
def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """P-value of "the run is (ε, δ)-DP" after ``v`` correct out of ``r`` guesses on ``m`` canaries.

    Steinke, Nasr, Jagielski (2023), Theorem (approximate DP, with abstentions), as evaluated by their
    Appendix D code: with ``B ~ Binomial(r, e^ε / (1 + e^ε))``,

        p = min(1, P[B >= v] + 2·m·δ · max_{1<=i<=v} (1/i)·P[v-i <= B <= v-1]).
    """
    m, r, v = _int("m", m, 1), _int("r", r), _int("v", v)
    if not v <= r <= m:
        raise ConfigError(f"need 0 <= v <= r <= m (correct <= guesses <= canaries), got v={v}, r={r}, m={m}.")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating)) or not epsilon >= 0:
        raise ConfigError(f"epsilon must be >= 0, got {epsilon!r}.")
    delta = _delta(delta)
    q = float(expit(float(epsilon)))
    tail = float(_st.binom.sf(v - 1, r, q))  # P[B >= v]; equals 1 for v = 0
    if delta == 0.0 or v == 0:
        return min(1.0, tail)
    i = np.arange(1, v + 1)
    window = np.cumsum(_st.binom.pmf(v - i, r, q))  # sum_{j<=i} P[B = v-j] = P[v-i <= B <= v-1]
    alpha = float(np.max(window / i))
    return min(1.0, tail + alpha * delta * 2.0 * m)


def epsilon_lower_bound(m: int, r: int, v: int, *, delta: float = 0.0, confidence: float = 0.95) -> float:
    """The largest ε that ``v`` correct of ``r`` guesses rules out at ``confidence`` (0 if none).

    Appendix D's ``get_eps_audit``: grow an upper bracket by 1 until the p-value reaches β = 1 - confidence,
    then bisect, always keeping the lower end at p-value < β, and return the lower end (the conservative side).
    """
    beta = 1.0 - _confidence(confidence)
    m, r, v = _int("m", m, 1), _int("r", r), _int("v", v)
    delta = _delta(delta)
    if one_run_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, hi + 1.0
        if hi > 1e4:  # cannot happen for r >= 1 (P[B >= v] -> 1 as ε -> ∞); a guard, not a result
            return lo
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if one_run_p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def ceiling_epsilon(m: int, r: int, *, delta: float = 0.0, confidence: float = 0.95) -> float:
    """The bound that ``r`` guesses, all correct, would give: the most this design can ever show."""
    return epsilon_lower_bound(m, r, r, delta=delta, confidence=confidence)


# ----------------------------------------------------------------------------- guesses
def guesses_top_bottom(scores: npt.ArrayLike, k_pos: int, k_neg: int, *,
                       rng: np.random.Generator | int | None = None) -> np.ndarray:
    """T in {-1, 0, +1}: +1 for the ``k_pos`` highest scores, -1 for the ``k_neg`` lowest, 0 (abstain) else.

    Ties are broken by an independent random key (never by index, which could correlate with the coins).
    """
    s = _scores(scores)
    m = s.size
    k_pos, k_neg = _int("k_pos", k_pos), _int("k_neg", k_neg)
    if k_pos + k_neg > m:
        raise ConfigError(f"k_pos + k_neg = {k_pos + k_neg} guesses exceed the {m} canaries.")
    if k_pos + k_neg == 0:
        raise ConfigError("make at least one guess (k_pos + k_neg >= 1).")
    rng = np.random.default_rng(rng)
    order = np.lexsort((rng.random(m), s))  # ascending score, random tie-break
    t = np.zeros(m, dtype=np.int8)
    if k_neg:
        t[order[:k_neg]] = -1
    if k_pos:
        t[order[m - k_pos:]] = 1
    return t


def count_correct(guesses: npt.ArrayLike, included: npt.ArrayLike) -> tuple[int, int]:
    """(r, v): number of non-abstaining guesses and of correct ones, v = Σ max(0, T_i·S_i)."""
    t = np.asarray(guesses)
    s = _labels(included, t.size)
    signs = np.where(s, 1, -1)
    return int(np.count_nonzero(t)), int(np.sum(np.maximum(0, t * signs)))


def default_guess_grid(m: int, inclusion_prob: float = 0.5,
                       fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0)) -> list[tuple[int, int]]:
    """A small grid of (k+, k-) fixed before scoring: guess on a fraction f of the canaries, split by the prior.

    Few confident guesses win under DP (weak signal); many guesses win without DP (the ceiling grows with r).
    The audit pays for the grid with a Bonferroni correction (confidence level 1 - β/|grid| per entry).
    """
    m = _int("m", m, 1)
    out: list[tuple[int, int]] = []
    for f in fractions:
        if not 0 < f <= 1:
            raise ConfigError(f"guess fractions must be in (0, 1], got {f!r}.")
        r = max(1, round(f * m))
        kp = round(r * inclusion_prob)
        kn = r - kp
        if kp == 0 and r >= 2:
            kp, kn = 1, r - 1
        if kn == 0 and r >= 2:
            kp, kn = r - 1, 1
        if (kp, kn) not in out:
            out.append((kp, kn))
    return out


def prune_grid(m: int, grid: Sequence[tuple[int, int]], *, delta: float = 0.0,
               confidence: float = 0.95) -> list[tuple[int, int]]:
    """Drop the choices that could not give a positive bound even with every guess right.

    Uses only public quantities (m, the choice, δ, β), never scores or coins, so it is part of fixing the
    design in advance. Iterates because fewer choices mean a milder Bonferroni correction.
    """
    beta = 1.0 - _confidence(confidence)
    g = [(int(a), int(b)) for a, b in grid]
    while True:
        keep = [(a, b) for a, b in g
                if epsilon_lower_bound(m, a + b, a + b, delta=delta, confidence=1 - beta / len(g)) > 0]
        if not keep:
            return [max(g, key=lambda x: x[0] + x[1])]  # nothing can certify: keep the strongest choice
        if len(keep) == len(g):
            return keep
        g = keep


@dataclass
class OneRunBound:
    """The certified part of an audit: everything needed to re-check the number by hand."""

    epsilon_lower: float
    confidence: float
    delta: float
    m: int
    k_pos: int
    k_neg: int
    guesses: int
    correct: int
    grid: list[tuple[int, int]]
    correction: str
    per_choice: list[dict[str, Any]] = field(default_factory=list)
    guess_vector: list[int] = field(default_factory=list)  # T of the reported choice, one entry per canary

    @property
    def precision(self) -> float:
        return self.correct / self.guesses if self.guesses else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def one_run_audit(scores: npt.ArrayLike, included: npt.ArrayLike, *, delta: float = 0.0,
                  confidence: float = 0.95, k_pos: int | None = None, k_neg: int | None = None,
                  grid: Sequence[tuple[int, int]] | None = None,
                  rng: np.random.Generator | int | None = None) -> OneRunBound:
    """Turn per-canary scores and the (revealed) coins into the one-run ε lower bound.

    Give ``k_pos``/``k_neg`` (one choice, no correction) or a ``grid`` of (k+, k-) choices fixed before the
    scores were seen (default :func:`default_guess_grid`); with a grid every entry is evaluated at
    β/|grid| and the largest bound is reported (Bonferroni: the union bound keeps the overall level β).
    """
    s = _scores(scores)
    inc = _labels(included, s.size)
    confidence = _confidence(confidence)
    delta = _delta(delta)
    m = s.size
    if (k_pos is None) != (k_neg is None):
        raise ConfigError("give both k_pos and k_neg, or neither (then a grid is used).")
    if k_pos is not None:
        if grid is not None:
            raise ConfigError("give k_pos/k_neg or a grid, not both.")
        choices = [(_int("k_pos", k_pos), _int("k_neg", k_neg))]
    else:
        choices = [(_int("k_pos", a), _int("k_neg", b)) for a, b in (grid or default_guess_grid(m))]
        if not choices:
            raise ConfigError("the guess grid is empty.")
    for a, b in choices:
        if a + b == 0 or a + b > m:
            raise ConfigError(f"guess choice (k_pos={a}, k_neg={b}) must make 1..{m} guesses.")
    beta = (1.0 - confidence) / len(choices)
    rng = np.random.default_rng(rng)
    tie = rng.random(m)  # one tie-break key for every choice
    order = np.lexsort((tie, s))
    signs = np.where(inc, 1, -1)
    best: dict[str, Any] | None = None
    best_t: np.ndarray | None = None
    per: list[dict[str, Any]] = []
    for a, b in choices:
        t = np.zeros(m, dtype=np.int8)
        if b:
            t[order[:b]] = -1
        if a:
            t[order[m - a:]] = 1
        r, v = int(np.count_nonzero(t)), int(np.sum(np.maximum(0, t * signs)))
        eps = epsilon_lower_bound(m, r, v, delta=delta, confidence=1.0 - beta)
        row = {"k_pos": a, "k_neg": b, "guesses": r, "correct": v, "epsilon_lower": eps}
        per.append(row)
        if best is None or eps > best["epsilon_lower"]:
            best, best_t = row, t
    assert best is not None and best_t is not None
    return OneRunBound(epsilon_lower=best["epsilon_lower"], confidence=confidence, delta=delta, m=m,
                       k_pos=best["k_pos"], k_neg=best["k_neg"], guesses=best["guesses"], correct=best["correct"],
                       grid=choices, correction="none" if len(choices) == 1 else f"bonferroni/{len(choices)}",
                       per_choice=per, guess_vector=best_t.astype(int).tolist())


# ----------------------------------------------------------------------------- membership-inference view
def roc(scores: npt.ArrayLike, included: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of the rule "included iff score >= τ", τ over every distinct score (descending).

    Starts at (0, 0) with τ = +inf and ends at (1, 1).
    """
    s = _scores(scores)
    inc = _labels(included, s.size)
    n_in, n_out = int(inc.sum()), int((~inc).sum())
    if n_in == 0 or n_out == 0:
        raise DataError(f"ROC needs included and excluded canaries, got {n_in} included and {n_out} excluded.")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, inc_sorted = s[order], inc[order]
    tp = np.cumsum(inc_sorted)
    fp = np.cumsum(~inc_sorted)
    last = np.r_[np.diff(s_sorted) != 0, True]  # keep the last index of every run of equal scores
    tpr = np.r_[0.0, tp[last] / n_in]
    fpr = np.r_[0.0, fp[last] / n_out]
    thr = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thr


def auc(scores: npt.ArrayLike, included: npt.ArrayLike) -> float:
    """Area under the ROC curve = P[score(in) > score(out)] + ½·P[tie] (Mann–Whitney)."""
    s = _scores(scores)
    inc = _labels(included, s.size)
    n_in, n_out = int(inc.sum()), int((~inc).sum())
    if n_in == 0 or n_out == 0:
        raise DataError(f"AUC needs included and excluded canaries, got {n_in} included and {n_out} excluded.")
    ranks = _st.rankdata(s)  # average ranks handle ties
    return float((ranks[inc].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


def tpr_at_fpr(scores: npt.ArrayLike, included: npt.ArrayLike, fpr: float) -> dict[str, Any]:
    """The best TPR among thresholds whose FPR is <= ``fpr`` (no interpolation), and whether it is measurable.

    With n excluded canaries FPR moves in steps of 1/n, so a target below 1/n is not measurable
    (``measurable=False``; the TPR is then the one at FPR = 0).
    """
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 < fpr < 1:
        raise ConfigError(f"fpr must be in (0, 1), got {fpr!r}.")
    s = _scores(scores)
    n_out = int((~_labels(included, s.size)).sum())
    f, t, thr = roc(s, included)
    ok = f <= fpr + 1e-15
    i = int(np.flatnonzero(ok)[np.argmax(t[ok])])
    return {"fpr_target": float(fpr), "tpr": float(t[i]), "fpr": float(f[i]), "threshold": float(thr[i]),
            "excluded": n_out, "measurable": n_out * fpr >= 1.0}


# ----------------------------------------------------------------------------- exposure (Secret Sharer)
def _log_perplexities(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise DataError(f"{name} must be a non-empty 1-D sequence of finite log-perplexities.")
    return a


def exposure_interpolation(canary_log_ppl: npt.ArrayLike, reference_log_ppl: npt.ArrayLike) -> np.ndarray:
    """Exposure by rank among N never-inserted references: log2 N − log2 rank, rank = 1 + #{ref <= canary}.

    Ties count the reference first (conservative). Resolution: at most log2 N bits; a never-inserted secret
    has E[exposure] ≈ 1/ln 2 ≈ 1.44 bits. Log-perplexity = −Σ log2 p(secret token | prefix), lower = more likely.
    """
    c = _log_perplexities(canary_log_ppl, "canary_log_ppl")
    ref = np.sort(_log_perplexities(reference_log_ppl, "reference_log_ppl"))
    rank = 1 + np.searchsorted(ref, c, side="right")
    return np.log2(ref.size) - np.log2(rank)


def exposure_extrapolation(canary_log_ppl: npt.ArrayLike, reference_log_ppl: npt.ArrayLike) -> np.ndarray:
    """Exposure −log2 F(canary) with F a skew-normal fitted to the references (resolves beyond log2 N)."""
    c = _log_perplexities(canary_log_ppl, "canary_log_ppl")
    ref = _log_perplexities(reference_log_ppl, "reference_log_ppl")
    if ref.size < 3 or float(np.std(ref)) == 0.0:
        raise DataError("extrapolated exposure needs at least 3 references with some spread.")
    params = _st.skewnorm.fit(ref)
    logcdf = _st.skewnorm.logcdf(c, *params)
    return np.maximum(-logcdf / math.log(2.0), 0.0)
