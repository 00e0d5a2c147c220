"""One training run with canaries, through the public client API, and the audit of its result.

``audit_privacy(config, data)`` is the one-call form. ``PrivacyAudit`` is the two-phase form for auditing a run
you drive yourself: build the canaries, mix them into the data (``records``), score the base model
(``score_base``), train with the library's Poisson draws, then ``finish(tc)``.

Design (docs/PRIVACY_AUDIT.md):

* The coins stay sealed while scores are computed; guesses are fixed (k+, k- or a Bonferroni grid) before the
  coins are opened.
* Every canary occupies one slot of the attached data set. An excluded canary's slot holds a *placeholder*:
  the same tokens with every label masked, so its gradient is exactly zero (training on it is a no-op). The
  data set size N, hence the sampling rate q = batch_size / N, the reported ε and the number of steps, is the
  same whatever the coins say, and each coin adds or removes exactly one record's contribution (add/remove
  adjacency, the setting of the theorem and of the accountant).
* By default the run trains on a synthetic stand-in of the same size as the caller's data, in a temporary
  workspace: no privacy budget of the real data is spent and the caller's ledger is untouched. With
  ``on_real_data=True`` the run trains on the caller's data in the caller's workspace and is charged like any
  other run.
"""

from __future__ import annotations

import html
import math
import secrets
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import TrainingConfig
from ..errors import BudgetExceededError, ConfigError, DataError, StateError
from . import stats
from .canaries import KINDS, CanarySet, SealedCoins

__all__ = ["DEFAULT_DELTA_NON_DP", "PrivacyAudit", "PrivacyAuditResult", "audit_privacy"]

DEFAULT_DELTA_NON_DP = 1e-5
_FORWARD_CHUNK = 64


# ----------------------------------------------------------------------------- scoring through the public API
def _forward_losses(tc: Any, records: Sequence[dict]) -> np.ndarray:
    """Per-example summed token loss (nats) of ``records`` under the client's current model, no gradients."""
    fwd = getattr(tc, "forward", None)
    if fwd is None:
        raise StateError("this TrainingClient has no forward(batch); the privacy audit scores canaries with it. "
                         "Update tinker_nb.")
    out: list[float] = []
    for i in range(0, len(records), _FORWARD_CHUNK):
        chunk = list(records[i:i + _FORWARD_CHUNK])
        res = fwd(chunk)
        if hasattr(res, "result") and not hasattr(res, "losses"):
            res = res.result()
        losses = list(res.losses)
        if len(losses) != len(chunk):
            raise StateError(f"forward returned {len(losses)} losses for {len(chunk)} examples.")
        out.extend(float(x) for x in losses)
    arr = np.asarray(out, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise StateError("forward returned a non-finite canary loss; the model diverged (lower the learning rate).")
    return arr


def _tokenizer_of(tc: Any) -> Any:
    tok = getattr(tc, "tokenizer", None)
    if tok is None:
        tok = tc.session.tokenizer
    return tok


# ----------------------------------------------------------------------------- result
@dataclass
class PrivacyAuditResult:
    """An empirical ε lower bound next to the ε the accountant reports for the same run.

    ``epsilon_lower`` holds with probability >= ``confidence`` if the run is (ε, δ)-DP: a value above
    ``epsilon_reported`` means the implementation (or the accounting) is broken. A small value proves nothing
    about privacy: an audit can show a leak, it cannot show its absence.
    """

    epsilon_lower: float
    confidence: float
    delta: float
    epsilon_reported: float
    accountant: str | None
    dp_enabled: bool
    accounting_valid: bool
    guesses: int
    correct: int
    k_pos: int
    k_neg: int
    audited_canaries: int
    n_canaries: int
    canary_kind: str
    inclusion_prob: float
    correction: str
    ceiling: float
    auc: float
    tpr_at_fpr: dict[str, dict[str, Any]]
    scores: Any  # pandas DataFrame, one row per canary
    steps: int
    dataset_size: int
    stand_in: bool
    relative_to_base: bool
    seconds: dict[str, float]
    canary_digest: str
    grid: list[tuple[int, int]]
    per_choice: list[dict[str, Any]]
    exposure: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    seeded: bool = False

    # -- views ---------------------------------------------------------------------------------------
    @property
    def precision(self) -> float:
        return self.correct / self.guesses if self.guesses else float("nan")

    @property
    def leak_detected(self) -> bool:
        """True when a DP run's bound exceeds its reported ε: the DP claim is refuted at this confidence."""
        return self.dp_enabled and self.epsilon_lower > self.epsilon_reported

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "scores"}
        d["precision"] = self.precision
        return d

    def summary(self) -> str:
        rep = "∞ (no DP)" if not self.dp_enabled else f"{self.epsilon_reported:.3g} ({self.accountant})"
        return (f"ε lower bound {self.epsilon_lower:.3f} at {self.confidence:.0%} confidence (δ={self.delta:g}) vs "
                f"reported ε {rep}; {self.correct}/{self.guesses} guesses correct on {self.audited_canaries} "
                f"canaries (most this design can show: {self.ceiling:.2f}); AUC {self.auc:.3f}")

    def __repr__(self) -> str:
        return f"PrivacyAuditResult({self.summary()})"

    def verdict(self) -> str:
        """What the numbers mean, in plain words."""
        if self.dp_enabled and self.leak_detected:
            return ("The measured lower bound is ABOVE the reported ε: the run leaks more than its guarantee allows. "
                    "The implementation or the accounting is broken (or the audit design was violated: duplicated "
                    "canaries, batches not from the library's sampler).")
        if self.epsilon_lower <= 0:
            return ("No leak was detected at this confidence. This does not prove privacy: a lower bound can show a "
                    "leak, it cannot show that there is none.")
        if not self.dp_enabled:
            return (f"Without DP the canaries leak: membership can be guessed well enough to rule out every ε below "
                    f"{self.epsilon_lower:.2f} (the most this design of {self.audited_canaries} canaries can show is "
                    f"{self.ceiling:.2f}).")
        return (f"Consistent with the guarantee: the run is provably not better than ε = {self.epsilon_lower:.2f}, and "
                f"the accountant says it is no worse than ε = {self.epsilon_reported:.2f}. The gap is expected for "
                "one black-box run; it is not a measure of how private the run is.")

    def figure(self):
        """Plotly figure: score histograms of included vs excluded canaries, and both ε values on one axis."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        df = self.scores
        fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], horizontal_spacing=0.12,
                            subplot_titles=("canary scores (higher = looks trained on)", "ε"))
        for inc, name, color in ((True, "included", "#d62728"), (False, "excluded", "#1f77b4")):
            s = df.loc[df["included"] == inc, "score"]
            fig.add_trace(go.Histogram(x=s, name=f"{name} ({len(s)})", opacity=0.6, marker_color=color,
                                       nbinsx=40), row=1, col=1)
        fig.update_layout(barmode="overlay")
        rep_finite = self.dp_enabled and math.isfinite(self.epsilon_reported)
        top = max(self.ceiling, self.epsilon_lower, self.epsilon_reported if rep_finite else 0.0) * 1.15 + 0.5
        rows = [("lower bound (measured)", self.epsilon_lower, "#2ca02c"),
                ("reported (accountant)" if rep_finite else "reported: ∞ (no DP)",
                 self.epsilon_reported if rep_finite else top, "#9467bd"),
                ("most this audit can show", self.ceiling, "#7f7f7f")]
        for label, val, color in rows:
            fig.add_trace(go.Bar(x=[val], y=[label], orientation="h", marker_color=color, showlegend=False,
                                 text=[f"{val:.2f}" if (val != top or rep_finite) else "∞"], textposition="outside",
                                 hovertemplate=f"{label}: %{{x:.3f}}<extra></extra>"), row=1, col=2)
        fig.update_xaxes(title_text="score", row=1, col=1)
        fig.update_yaxes(title_text="canaries", row=1, col=1)
        fig.update_xaxes(range=[0, top * 1.2], title_text="ε", row=1, col=2)
        title = (f"Privacy audit: ε ≥ {self.epsilon_lower:.2f} at {self.confidence:.0%} "
                 f"(reported {'∞' if not rep_finite else f'{self.epsilon_reported:.2f}'})")
        fig.update_layout(title=title, height=380, margin=dict(l=40, r=20, t=70, b=40),
                          legend=dict(orientation="h", y=-0.2))
        return fig

    def _repr_html_(self) -> str:
        acct = html.escape(str(self.accountant))
        rep = "∞ (no DP)" if not self.dp_enabled else f"{self.epsilon_reported:.3f} <small>({acct})</small>"
        warn = "" if self.accounting_valid or not self.dp_enabled else \
            "<p style='color:#b00'>The run's accounting is marked invalid; see notes.</p>"
        tpr = self.tpr_at_fpr.get("0.01", {})
        tpr_s = f"{tpr.get('tpr', float('nan')):.3f}" + ("" if tpr.get("measurable") else " (not measurable)")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        exp = ""
        if self.exposure:
            exp = (f"<tr><td>exposure (bits, included / excluded median)</td><td>{self.exposure['included_median']:.2f}"
                   f" / {self.exposure['excluded_median']:.2f} of {self.exposure['max_bits']:.1f}</td></tr>")
        return (
            "<div class='tinker-nb-privacy-audit'>"
            f"<h4>Privacy audit ({'stand-in data' if self.stand_in else 'real data'}, "
            f"{'DP' if self.dp_enabled else 'no DP'}, {self.steps} steps)</h4>"
            "<table>"
            f"<tr><td><b>ε lower bound</b> ({self.confidence:.0%}, δ={self.delta:g})</td>"
            f"<td><b>{self.epsilon_lower:.3f}</b></td></tr>"
            f"<tr><td>ε reported</td><td>{rep}</td></tr>"
            f"<tr><td>correct / guesses (k+={self.k_pos}, k−={self.k_neg}, {html.escape(self.correction)})</td>"
            f"<td>{self.correct} / {self.guesses}</td></tr>"
            f"<tr><td>canaries audited / total</td><td>{self.audited_canaries} / {self.n_canaries} "
            f"({html.escape(self.canary_kind)})</td></tr>"
            f"<tr><td>most this design can show</td><td>{self.ceiling:.3f}</td></tr>"
            f"<tr><td>AUC · TPR at 1% FPR</td><td>{self.auc:.3f} · {tpr_s}</td></tr>{exp}"
            "</table>"
            f"<p>{html.escape(self.verdict())}</p>{warn}"
            + (f"<ul>{notes}</ul>" if notes else "") + "</div>"
        )


# ----------------------------------------------------------------------------- the two-phase audit
class PrivacyAudit:
    """Canaries + sealed coins + the scoring and statistics of one audited run."""

    def __init__(self, canaries: CanarySet, *, inclusion_prob: float = 0.5, confidence: float = 0.95,
                 delta: float | None = None, k_pos: int | None = None, k_neg: int | None = None,
                 relative_to_base: bool = False, exposure_references: int = 0, fixed_rate: bool = True,
                 seed: int | None = None) -> None:
        if not isinstance(canaries, CanarySet):
            raise ConfigError("PrivacyAudit needs a CanarySet (CanarySet.random_tokens or CanarySet.templated).")
        self.confidence = stats._confidence(confidence)
        if delta is not None:
            stats._delta(delta)
        self.delta = delta
        self.canaries = canaries
        self.coins = SealedCoins(len(canaries), inclusion_prob, seed=None if seed is None else seed + 1)
        m_aud = int(self.coins.audited.sum())
        if m_aud == 0:
            raise ConfigError(f"no canary takes part in the certified audit at inclusion_prob={inclusion_prob:g}; "
                              "use more canaries or an inclusion probability nearer 1/2.")
        if (k_pos is None) != (k_neg is None):
            raise ConfigError("give both k_pos and k_neg, or neither (a Bonferroni grid is then used).")
        if k_pos is not None:
            kp, kn = stats._int("k_pos", k_pos), stats._int("k_neg", k_neg)
            if kp + kn == 0 or kp + kn > m_aud:
                raise ConfigError(f"k_pos + k_neg must be 1..{m_aud} (the audited canaries).")
            self.grid = [(kp, kn)]
            self._explicit_k = True
        else:
            self._explicit_k = False
            self.grid = stats.default_guess_grid(m_aud, 0.5)  # audited canaries carry fair coins
        self.relative_to_base = bool(relative_to_base)
        if isinstance(exposure_references, bool) or not isinstance(exposure_references, int) or exposure_references < 0:
            raise ConfigError("exposure_references must be a non-negative integer.")
        if exposure_references and canaries.kind != "template":
            raise ConfigError("exposure needs templated canaries (kind='template').")
        self.exposure_references = exposure_references
        self.fixed_rate = bool(fixed_rate)
        self.seed = seed
        self.base_losses: np.ndarray | None = None
        self._n_records: int | None = None

    @classmethod
    def for_client(cls, tc: Any, n_canaries: int = 256, *, kind: str = "random", length: int | None = None,
                   template: str | None = None, seed: int | None = None, **kwargs: Any) -> PrivacyAudit:
        """Canaries made with ``tc``'s tokenizer (random tokens, or templated secrets for ``kind='template'``)."""
        canaries = make_canaries(_tokenizer_of(tc), n_canaries, kind=kind, length=length, template=template, seed=seed)
        return cls(canaries, seed=seed, **kwargs)

    def records(self, data: Sequence[Any]) -> list[Any]:
        """``data`` followed by one slot per canary: the canary if its coin says so, else a placeholder."""
        data = _normalized(data)
        if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
            raise DataError("data must be a list of records (strings or dicts).")
        self.canaries.check_disjoint(data)
        mask = self.coins._for_training()
        slots: list[Any] = []
        for c, inc in zip(self.canaries.canaries, mask):
            if inc:
                slots.append(c.record())
            elif self.fixed_rate:
                slots.append(c.placeholder())
        out = list(data) + slots
        self._n_records = len(out)
        return out

    def score_base(self, tc: Any) -> np.ndarray:
        """Canary losses under the base model: call before the first optim_step (LoRA starts as the identity)."""
        if getattr(getattr(tc, "session", None), "steps", 0):
            raise StateError("score_base must run before training: the client has already taken steps.")
        self.base_losses = _forward_losses(tc, self.canaries.records())
        return self.base_losses

    def finish(self, tc: Any, *, stand_in: bool = False, seconds: dict[str, float] | None = None,
               notes: Sequence[str] = ()) -> PrivacyAuditResult:
        """Score every canary under ``tc``'s final model, then open the coins and compute the bound."""
        import pandas as pd

        t0 = time.perf_counter()
        metrics = tc.get_dp_metrics()
        if metrics.sampling != "poisson" or metrics.steps == 0:
            raise StateError(f"the audited run must train only on the library's own Poisson draws "
                             f"(poisson_batches()); this run's sampling is {metrics.sampling!r} with "
                             f"{metrics.steps} steps. A bound from other batches would not match the reported ε.")
        if self._n_records is not None and metrics.dataset_size != self._n_records:
            raise StateError(f"the client trained on {metrics.dataset_size} records, but the audit built "
                             f"{self._n_records}; attach exactly audit.records(data).")
        if self.relative_to_base and self.base_losses is None:
            raise StateError("relative_to_base=True needs score_base(tc) before training.")
        final = _forward_losses(tc, self.canaries.records())
        base = self.base_losses if self.relative_to_base else None
        scores = (base - final) if base is not None else -final
        exposure_vals = None
        exposure_summary = None
        if self.exposure_references:
            refs = self.canaries.reference_records(self.exposure_references,
                                                   seed=None if self.seed is None else self.seed + 2)
            ref_bits = _forward_losses(tc, refs) / math.log(2.0)
            exposure_vals = stats.exposure_interpolation(final / math.log(2.0), ref_bits)
        t_score = time.perf_counter() - t0
        # --- every score is fixed: open the coins.
        included = self.coins.reveal(scores_fixed=True)
        audited = self.coins.audited
        dp = bool(metrics.dp_enabled)
        delta = self.delta if self.delta is not None else \
            (metrics.delta if dp and metrics.delta else DEFAULT_DELTA_NON_DP)
        rng = np.random.default_rng(None if self.seed is None else self.seed + 3)
        m_aud = int(audited.sum())
        grid = self.grid if self._explicit_k else stats.prune_grid(m_aud, self.grid, delta=delta,
                                                                   confidence=self.confidence)
        bound = stats.one_run_audit(scores[audited], included[audited], delta=delta, confidence=self.confidence,
                                    grid=grid, rng=rng)
        ceiling = max(stats.ceiling_epsilon(m_aud, a + b, delta=delta, confidence=1 - (1 - self.confidence) / len(grid))
                      for a, b in grid)
        guess = np.zeros(len(scores), dtype=np.int8)
        guess[np.flatnonzero(audited)] = np.asarray(bound.guess_vector, dtype=np.int8)
        both = included.any() and (~included).any()
        auc_v = stats.auc(scores, included) if both else float("nan")
        tprs = {}
        for f in (0.01, 0.001):
            tprs[str(f)] = stats.tpr_at_fpr(scores, included, f) if both else {"tpr": float("nan"), "measurable": False}
        df = pd.DataFrame({
            "canary": np.arange(len(scores)), "kind": self.canaries.kind,
            "text": [self.canaries.text(i) for i in range(len(scores))],
            "audited": audited, "included": included, "score": scores, "loss_final": final,
            "loss_base": base if base is not None else np.nan,
            "guess": np.select([guess > 0, guess < 0], ["in", "out"], "abstain"),
            "correct": np.where(guess == 0, np.nan, (guess > 0) == included),
        })
        if exposure_vals is not None:
            df["exposure_bits"] = exposure_vals
            exposure_summary = {
                "included_median": float(np.median(exposure_vals[included])) if included.any() else float("nan"),
                "excluded_median": float(np.median(exposure_vals[~included])) if (~included).any() else float("nan"),
                "max_bits": float(math.log2(self.exposure_references)),
                "secret_space_bits": self.canaries.secret_space_bits, "references": self.exposure_references}
        all_notes = list(notes) + list(getattr(metrics, "notes", []) or [])
        if not self.fixed_rate:
            all_notes.append("fixed_rate=False: the data set size, hence q, depends on the coins; the reported ε and "
                             "the bound then refer to slightly different mechanisms.")
        if self.canaries.seeded or self.coins.seeded:
            all_notes.append("canaries or coins came from a fixed seed: reproducible, but whoever knows the seed knows "
                             "the coins.")
        secs = dict(seconds or {})
        secs["score_final"] = t_score
        secs["statistics"] = time.perf_counter() - t0 - t_score
        return PrivacyAuditResult(
            epsilon_lower=bound.epsilon_lower, confidence=self.confidence, delta=delta,
            epsilon_reported=_run_epsilon(metrics) if dp else float("inf"),
            accountant=metrics.accountant if dp else None, dp_enabled=dp,
            accounting_valid=bool(metrics.accounting_valid) if dp else False,
            guesses=bound.guesses, correct=bound.correct, k_pos=bound.k_pos, k_neg=bound.k_neg,
            audited_canaries=m_aud, n_canaries=len(scores), canary_kind=self.canaries.kind,
            inclusion_prob=self.coins.inclusion_prob, correction=bound.correction, ceiling=ceiling, auc=auc_v,
            tpr_at_fpr=tprs, scores=df, steps=int(metrics.steps), dataset_size=int(metrics.dataset_size or 0),
            stand_in=stand_in, relative_to_base=self.relative_to_base, seconds=secs,
            canary_digest=self.canaries.digest(), grid=bound.grid, per_choice=bound.per_choice,
            exposure=exposure_summary, notes=all_notes, seeded=self.canaries.seeded or self.coins.seeded)


def _normalized(data: Any) -> Any:
    """The library's own reading of user data (lists, pandas, .jsonl/.csv/.txt paths, HF datasets)."""
    if isinstance(data, (list, tuple)):
        return data
    try:
        from ..records import normalize_records
    except ImportError:  # pragma: no cover - older tinker_nb
        return data
    return normalize_records(data)


def _run_epsilon(metrics: Any) -> float:
    """ε of this run's own steps (``client_epsilon``); the data set's total when the client does not say."""
    own = getattr(metrics, "client_epsilon", None)
    return float(own if own is not None else metrics.epsilon_spent)


def make_canaries(tokenizer: Any, n: int, *, kind: str = "random", length: int | None = None,
                  template: str | None = None, seed: int | None = None) -> CanarySet:
    if kind not in KINDS:
        raise ConfigError(f"canary kind must be one of {KINDS}, got {kind!r}.")
    if kind == "random":
        if template is not None:
            raise ConfigError("template applies to kind='template' canaries only.")
        return CanarySet.random_tokens(n, tokenizer=tokenizer, length=16 if length is None else length, seed=seed)
    kw = {"template": template} if template is not None else {}
    return CanarySet.templated(n, tokenizer=tokenizer, digits=6 if length is None else length, seed=seed, **kw)


# ----------------------------------------------------------------------------- one call
def _stand_in(n: int, seed: int | None) -> list[str]:
    from ..engine.demo_data import demo_records

    return demo_records(n, seed=(seed if seed is not None else secrets.randbits(31)) + 7)


def audit_privacy(config: TrainingConfig, data: Sequence[Any] | None = None, *, dataset_size: int | None = None,
                  n_canaries: int = 256, canary_kind: str = "random", canary_length: int | None = None,
                  template: str | None = None, inclusion_prob: float = 0.5, confidence: float = 0.95,
                  delta: float | None = None, k_pos: int | None = None, k_neg: int | None = None,
                  epochs: float | None = None, steps: int | None = None, relative_to_base: bool = False,
                  exposure_references: int | None = None, on_real_data: bool = False, service: Any = None,
                  workspace: str | None = None, fixed_rate: bool = True, seed: int | None = None) -> PrivacyAuditResult:
    """Train once with ``config`` over data + canaries (each in with probability ``inclusion_prob``), score, bound.

    By default the data is a synthetic stand-in of ``len(data)`` (or ``dataset_size``) records and the run lives
    in a temporary workspace: nothing is charged to the real data's budget. ``on_real_data=True`` trains on
    ``data`` itself in ``service``'s workspace (or ``workspace``), charged like any other run.
    Training runs for ``steps`` draws, or ``epochs`` expected passes (default ``config.epochs``).
    """
    t_start = time.perf_counter()
    if not isinstance(config, TrainingConfig):
        raise ConfigError(f"audit_privacy expects a TrainingConfig, got {type(config).__name__}.")
    if isinstance(n_canaries, bool) or not isinstance(n_canaries, int) or n_canaries < 1:
        raise ConfigError(f"n_canaries must be a positive integer (a few hundred is typical), got {n_canaries!r}.")
    p = inclusion_prob
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 < p < 1:
        raise ConfigError(f"inclusion_prob must be strictly between 0 and 1 (0.5 is the usual choice), got {p!r}.")
    stats._confidence(confidence)
    if canary_kind not in KINDS:
        raise ConfigError(f"canary_kind must be one of {KINDS}, got {canary_kind!r}.")
    if steps is not None and epochs is not None:
        raise ConfigError("give steps or epochs, not both.")
    if data is not None:
        data = _normalized(data)
    if on_real_data:
        if data is None:
            raise ConfigError("on_real_data=True needs the data to audit.")
        records_src = data
    else:
        n = dataset_size if dataset_size is not None else (len(data) if data is not None else None)
        if n is None:
            raise ConfigError("give the data (its size is used for the synthetic stand-in) or dataset_size.")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"dataset_size must be a positive integer, got {n!r}.")
        records_src = _stand_in(n, seed)
    if exposure_references is None:
        exposure_references = 256 if canary_kind == "template" else 0

    from ..client import ServiceClient

    tmp = None
    notes: list[str] = []
    if on_real_data:
        svc = service or ServiceClient(workspace=workspace, tenant=config.tenant)
        notes.append("trained on the real data: every step is charged to your data set's own budget (and to the "
                     "combined set of your data plus the canary slots that was attached).")
    else:
        if service is not None or workspace is not None:
            raise ConfigError("service/workspace apply to on_real_data=True; the stand-in run uses a temporary "
                              "workspace so your ledger and budgets are untouched.")
        tmp = tempfile.TemporaryDirectory(prefix="tinker-nb-audit-")
        svc = ServiceClient(workspace=f"{tmp.name}/ws", tenant=config.tenant, key_file=f"{tmp.name}/root.key")
        notes.append("trained on a synthetic stand-in of the same size in a temporary workspace: no budget spent.")
    tc = None
    try:
        t0 = time.perf_counter()
        tc = svc.create_training_client(config)
        audit = PrivacyAudit.for_client(
            tc, n_canaries, kind=canary_kind, length=canary_length, template=template, seed=seed,
            inclusion_prob=inclusion_prob, confidence=confidence, delta=delta, k_pos=k_pos, k_neg=k_neg,
            relative_to_base=relative_to_base, exposure_references=exposure_references, fixed_rate=fixed_rate)
        records = audit.records(records_src)
        t1 = time.perf_counter()
        if relative_to_base:
            audit.score_base(tc)
        t2 = time.perf_counter()
        if on_real_data:
            tc.attach_dataset(records, charge_also=records_src)
        else:
            tc.attach_dataset(records)
        dp = config.dp_config is not None
        draws = tc.poisson_batches(steps=steps) if steps is not None else \
            tc.poisson_batches(epochs=epochs if epochs is not None else config.epochs)
        for d in draws:
            fb = tc.forward_backward(d)
            if not dp and fb.result().examples == 0:
                continue  # without DP an empty draw has nothing to step on (with DP it is a noise-only step)
            try:
                tc.optim_step().result()
            except BudgetExceededError:
                notes.append("training stopped early: the next step would have passed target_epsilon.")
                break
        t3 = time.perf_counter()
        res = audit.finish(tc, stand_in=not on_real_data, notes=notes,
                           seconds={"setup": t1 - t0, "score_base": t2 - t1, "train": t3 - t2})
        res.seconds["total"] = time.perf_counter() - t_start
        return res
    finally:
        if tc is not None:
            tc.close()
        if tmp is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tmp.cleanup()
