"""Plan privacy before training: (σ or target ε, batch, N, epochs, δ) → ε, steps, and the ε-vs-steps curve.

:func:`plan` is exact: it uses the same ε the engine's budget uses (:func:`tinker_nb.accounting.report`,
the smaller of PLD and RDP), and its ``dp_config`` line reproduces the plan exactly — σ is rounded
*up* (more noise, less ε) and the target ε is never rounded down, so the planned number of steps
always fits the budget the engine enforces.

The :class:`BudgetPlanner` widget answers every slider move in two stages: an approximate answer at
once (Gaussian-DP central-limit approximation, a few milliseconds, marked "≈"), then the exact one from
a background thread (well under two seconds; cached), so the kernel never blocks and a drag shows values
as it moves. Only the latest request is computed.
"""

from __future__ import annotations

import functools
import html
import math
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .. import accounting
from ..errors import ConfigError
from ._display import LiveDisplay

__all__ = ["BudgetPlanner", "Plan", "plan", "quick_plan"]

STATIC = Path(__file__).parent / "static"
CURVE_POINTS = 12
SIGMA_DIGITS = 4  # significant digits of the σ printed in dp_config (rounded up)


@dataclass
class Plan:
    """A planned DP run. ``exact`` is False for the quick (approximate) answer the widget shows first."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float
    epsilon_rdp: float | None
    delta: float
    accountant: str
    curve: list[tuple[int, float]]
    dp_config: str
    target_epsilon: float | None = None
    dataset_size: int = 0
    batch_size: int = 0
    epochs: float = 0.0
    max_grad_norm: float = 1.0
    exact: bool = True
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __repr__(self) -> str:
        approx = "" if self.exact else "≈"
        return (f"Plan(ε{'=' if self.exact else ''}{approx}{self.epsilon:.4g} at δ={self.delta:g} "
                f"({self.accountant.upper()}), σ={self.noise_multiplier:g}, q={self.sample_rate:.4g}, "
                f"{self.steps} steps)\n{self.dp_config}")

    def _repr_html_(self) -> str:
        return plan_html(self)


def _check_inputs(dataset_size: Any, batch_size: Any, epochs: Any, delta: Any) -> None:
    for name, v in (("dataset_size", dataset_size), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}.")
    if batch_size > dataset_size:
        raise ConfigError(f"batch_size {batch_size} is larger than the data set size N={dataset_size}: the sample "
                          "rate q = batch_size / N must be at most 1. Lower the batch size or use more data.")
    if not (isinstance(epochs, (int, float)) and epochs > 0 and math.isfinite(epochs)):
        raise ConfigError(f"epochs must be > 0, got {epochs!r}.")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}.")
    if not delta < 1 / dataset_size:
        raise ConfigError(f"delta={delta:g} must be < 1/N = {1 / dataset_size:.3g} for a meaningful guarantee; "
                          "lower δ (e.g. 1/(10·N)).")


def _check_mode(noise_multiplier: Any, target_epsilon: Any) -> None:
    """Exactly one of σ (fix σ → ε) or the target ε (fix ε → σ), and it is a finite number > 0."""
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ConfigError("give exactly one of noise_multiplier or target_epsilon.")
    for name, v in (("noise_multiplier", noise_multiplier), ("target_epsilon", target_epsilon)):
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                  and math.isfinite(v)):
            raise ConfigError(f"{name} must be > 0, got {v!r}.")


def _ceil_sig(x: float, digits: int) -> float:
    """Round ``x`` > 0 up to ``digits`` significant digits (the result's repr is short and exact)."""
    e = math.floor(math.log10(x)) - digits + 1
    scale = 10.0 ** e
    y = float(f"{math.ceil(x / scale - 1e-9) * scale:.{digits}g}")
    return y if y >= x else float(f"{(math.ceil(x / scale) + 1) * scale:.{digits}g}")


def _ceil_dec(x: float, decimals: int = 3) -> float:
    y = float(f"{math.ceil(x * 10**decimals) / 10**decimals:.{decimals}f}")
    while y < x:
        y = float(f"{y + 10**-decimals:.{decimals}f}")
    return y


@functools.lru_cache(maxsize=2048)
def _eps(sigma: float, q: float, steps: int, delta: float, accountant: str) -> float:
    """The ε the engine's budget computes (min of the configured accountant and RDP)."""
    return accounting.report([(sigma, q, steps)], delta=delta, accountant=accountant).epsilon


@functools.lru_cache(maxsize=256)
def _sigma_for(target: float, q: float, steps: int, delta: float, accountant: str) -> float:
    """Smallest σ (to 0.1%) with ε(σ) ≤ target, bracketed around the Gaussian-DP estimate."""
    guess = _gdp_sigma(target, q, steps, delta)
    lo, hi = guess * 0.9, guess * 1.1
    for _ in range(40):
        if _eps(hi, q, steps, delta, accountant) <= target:
            break
        lo, hi = hi, hi * 1.3
    else:
        raise ConfigError("cannot reach target_epsilon with any reasonable noise; raise the target or delta.")
    for _ in range(40):
        if lo <= 0.05 or _eps(lo, q, steps, delta, accountant) > target:
            break
        hi, lo = lo, lo / 1.3
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        if _eps(mid, q, steps, delta, accountant) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _gdp_eps(sigma: float, q: float, steps: int, delta: float) -> float:
    """Central-limit Gaussian-DP approximation of the subsampled Gaussian (Dong, Roth, Su 2019).

    μ = q·sqrt(T·(e^{1/σ²} − 1)); ε solves δ = Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2). Pure ``math``: ~0.1 ms.
    """
    mu = q * math.sqrt(steps * math.expm1(min(1.0 / (sigma * sigma), 700.0)))
    if mu <= 0:
        return 0.0

    def d(eps: float) -> float:
        return _phi(-eps / mu + mu / 2) - math.exp(min(eps, 700.0)) * _phi(-eps / mu - mu / 2) - delta

    if d(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while d(hi) > 0 and hi < 1e4:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if d(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-6 * hi:
            break
    return hi


def _gdp_sigma(target: float, q: float, steps: int, delta: float) -> float:
    lo, hi = 0.05, 200.0
    if _gdp_eps(hi, q, steps, delta) > target:
        return hi
    for _ in range(50):
        mid = math.sqrt(lo * hi)
        if _gdp_eps(mid, q, steps, delta) <= target:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1.002:
            break
    return hi


def _curve_steps(steps: int, points: int) -> list[int]:
    return sorted({max(1, round(steps * (i + 1) / points)) for i in range(points)})


def _config_line(sigma: float, max_grad_norm: float, target: float, delta: float, accountant: str) -> str:
    acct = "" if accountant == "pld" else f", accountant={accountant!r}"
    return (f"DPConfig(noise_multiplier={sigma!r}, max_grad_norm={max_grad_norm!r}, target_epsilon={target!r}, "
            f"target_delta={delta!r}{acct})")


def plan(*, dataset_size: int, batch_size: int, epochs: float, delta: float = 1e-5,
         noise_multiplier: float | None = None, target_epsilon: float | None = None, max_grad_norm: float = 1.0,
         accountant: str = "pld", points: int = CURVE_POINTS) -> Plan:
    """ε for a planned run, or the σ that reaches ``target_epsilon``; with the ε(steps) curve. Exact.

    ``dp_config`` is a ``DPConfig(...)`` line that reproduces the plan: with ``batch_size`` and
    ``epochs`` on a data set of ``dataset_size`` records, the engine allows every planned step.
    """
    t0 = time.perf_counter()
    _check_inputs(dataset_size, batch_size, epochs, delta)
    _check_mode(noise_multiplier, target_epsilon)
    if accountant not in ("pld", "prv", "rdp"):
        raise ConfigError(f"accountant must be 'pld', 'prv' or 'rdp', got {accountant!r}.")
    delta = float(f"{delta:.3g}")
    q = batch_size / dataset_size
    steps = accounting.steps_for_epochs(sample_rate=q, epochs=epochs)
    if noise_multiplier is not None:
        sigma = float(f"{noise_multiplier:.6g}")
        eps = _eps(sigma, q, steps, delta, accountant)
        target = _ceil_dec(eps, 3)
    else:
        assert target_epsilon is not None  # _check_mode: exactly one of the two
        target = float(target_epsilon)
        sigma = _ceil_sig(_sigma_for(target, q, steps, delta, accountant), SIGMA_DIGITS)
        eps = _eps(sigma, q, steps, delta, accountant)
        while eps > target:  # rounding up σ lowers ε; this only guards the invariant
            sigma = _ceil_sig(sigma * 1.0005, SIGMA_DIGITS)
            eps = _eps(sigma, q, steps, delta, accountant)
    curve = [(t, _eps(sigma, q, t, delta, accountant) if t == steps else
              accounting.epsilon([(sigma, q, t)], delta=delta, accountant="pld", pld_value_interval=0.01)
              if accountant == "pld" else _eps(sigma, q, t, delta, accountant))
             for t in _curve_steps(steps, points)]
    eps_rdp = accounting.epsilon([(sigma, q, steps)], delta=delta, accountant="rdp")
    return Plan(sigma, q, steps, eps, eps_rdp, delta, accountant, curve,
                _config_line(sigma, float(max_grad_norm), target, delta, accountant), target_epsilon=target,
                dataset_size=dataset_size, batch_size=batch_size, epochs=float(epochs),
                max_grad_norm=float(max_grad_norm), exact=True, seconds=time.perf_counter() - t0)


def quick_plan(*, dataset_size: int, batch_size: int, epochs: float, delta: float = 1e-5,
               noise_multiplier: float | None = None, target_epsilon: float | None = None,
               max_grad_norm: float = 1.0, accountant: str = "pld", points: int = 32) -> Plan:
    """The approximate plan shown while the exact one is computed (Gaussian-DP CLT; milliseconds).

    Its numbers are estimates, not bounds: copy ``dp_config`` from the exact :func:`plan` only.
    """
    t0 = time.perf_counter()
    _check_inputs(dataset_size, batch_size, epochs, delta)
    _check_mode(noise_multiplier, target_epsilon)
    delta = float(f"{delta:.3g}")
    q = batch_size / dataset_size
    steps = accounting.steps_for_epochs(sample_rate=q, epochs=epochs)
    if noise_multiplier is not None:
        sigma = float(noise_multiplier)
        target = None
    else:
        assert target_epsilon is not None  # exactly one of the two is given (the planner passes plan()'s checked args)
        target = float(target_epsilon)
        sigma = _gdp_sigma(target, q, steps, delta)
    eps = _gdp_eps(sigma, q, steps, delta)
    curve = [(t, _gdp_eps(sigma, q, t, delta)) for t in _curve_steps(steps, points)]
    return Plan(sigma, q, steps, eps, None, delta, accountant, curve, "", target_epsilon=target,
                dataset_size=dataset_size, batch_size=batch_size, epochs=float(epochs),
                max_grad_norm=float(max_grad_norm), exact=False, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- static HTML
def _nice_ticks(hi: float, n: int = 4) -> list[float]:
    if hi <= 0:
        return [0.0]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(hi / step + 1e-9) + 1)]


def chart_svg(curve: list[tuple[int, float]], *, target: float | None, delta: float, width: int = 320,
              height: int = 170) -> str:
    """ε-vs-steps chart with axes, ticks, units and the target line (static SVG, theme colours)."""
    if not curve:
        return ""
    fg2 = "var(--jp-ui-font-color2, #555)"
    grid = "var(--jp-border-color2, #ddd)"
    x_hi = max(t for t, _ in curve)
    y_hi = max(max(e for _, e in curve), target or 0) * 1.08 or 1.0
    L, R, T, B = 40, 10, 8, 34
    W, H = width - L - R, height - T - B

    def X(t: float) -> float:
        return L + W * t / x_hi

    def Y(e: float) -> float:
        return T + H * (1 - e / y_hi)

    parts = [f'<svg viewBox="0 0 {width} {height}" style="display:block;width:100%;max-width:{int(width * 1.5)}px;'
             f'height:auto" role="img" aria-label="epsilon versus steps">']
    for v in _nice_ticks(y_hi):
        parts.append(f'<line x1="{L}" x2="{L + W}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="{grid}"/>'
                     f'<text x="{L - 4}" y="{Y(v) + 3:.1f}" text-anchor="end" font-size="10" fill="{fg2}">{v:g}</text>')
    for v in _nice_ticks(x_hi):
        parts.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{T + H}" y2="{T + H + 3}" stroke="{fg2}"/>'
                     f'<text x="{X(v):.1f}" y="{T + H + 13}" text-anchor="middle" font-size="10" fill="{fg2}">'
                     f'{int(v) if v == int(v) else v:g}</text>')
    parts.append(f'<line x1="{L}" x2="{L + W}" y1="{T + H}" y2="{T + H}" stroke="{fg2}"/>'
                 f'<line x1="{L}" x2="{L}" y1="{T}" y2="{T + H}" stroke="{fg2}"/>')
    if target:
        parts.append(f'<line x1="{L}" x2="{L + W}" y1="{Y(target):.1f}" y2="{Y(target):.1f}" stroke="#d9534f" '
                     f'stroke-dasharray="4 3"/><text x="{L + W}" y="{Y(target) - 3:.1f}" text-anchor="end" '
                     f'font-size="10" fill="#d9534f">target ε {target:g}</text>')
    pts = " ".join(f"{X(t):.1f},{Y(e):.1f}" for t, e in [(0, 0.0)] + list(curve))
    parts.append(f'<polyline fill="none" stroke="#3b82c4" stroke-width="2" points="{pts}"/>')
    parts.append(f'<text x="{L + W / 2}" y="{height - 4}" text-anchor="middle" font-size="10" fill="{fg2}">'
                 f'optimizer steps (Poisson draws)</text>'
                 f'<text x="10" y="{T + H / 2}" text-anchor="middle" font-size="10" fill="{fg2}" '
                 f'transform="rotate(-90 10 {T + H / 2})">ε at δ={delta:.0e}</text></svg>')
    return "".join(parts)


def plan_html(p: Plan | None, *, error: str = "") -> str:
    e = html.escape
    fg = "var(--jp-ui-font-color1, #222)"
    fg2 = "var(--jp-ui-font-color2, #555)"
    bd = "var(--jp-border-color2, #ddd)"
    head = (f'<div class="tnb-static" style="font-family:var(--jp-ui-font-family, system-ui, sans-serif);font-size:13px;'
            f'color:{fg};border:1px solid {bd};border-radius:8px;padding:8px 10px;max-width:760px;box-sizing:border-box">'
            f'<b>privacy budget plan</b> <span style="color:{fg2}">(static snapshot)</span>')
    if error:
        return head + f'<div style="color:#d9534f;font-weight:600">{e(error)}</div></div>'
    assert p is not None  # a plan, or an error to show
    approx = "" if p.exact else "≈ "
    return (head + f'<div style="font-size:18px;font-weight:700">ε {approx}{p.epsilon:.3f} '
            f'<span style="font-size:12px;font-weight:400;color:{fg2}">at δ={p.delta:g} ({e(p.accountant.upper())})</span></div>'
            f'<div style="color:{fg2};font-size:12px">N={p.dataset_size:,} records · batch {p.batch_size} · '
            f'q={p.sample_rate:.4g} · {p.epochs:g} epochs = {p.steps:,} steps · σ={p.noise_multiplier:g} · '
            f'C={p.max_grad_norm:g}</div>'
            f'{chart_svg(p.curve, target=p.target_epsilon, delta=p.delta)}'
            f'<pre style="white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px;margin:4px 0">{e(p.dp_config)}</pre>'
            f'</div>')


# ---------------------------------------------------------------------------------------------- widget
class BudgetPlanner(LiveDisplay, anywidget.AnyWidget):
    """Sliders for σ (or target ε), batch size, data set size, epochs and δ; shows ε and the ε-vs-steps curve."""

    _esm = STATIC / "planner.js"
    _css = STATIC / "dashboard.css"

    mode = traitlets.Unicode("noise").tag(sync=True)  # "noise" (fix σ → ε) or "target" (fix ε → σ)
    noise_multiplier = traitlets.Float(1.0).tag(sync=True)
    target_epsilon = traitlets.Float(8.0).tag(sync=True)
    batch_size = traitlets.Int(64).tag(sync=True)
    dataset_size = traitlets.Int(10_000).tag(sync=True)
    epochs = traitlets.Float(3.0).tag(sync=True)
    log10_delta = traitlets.Float(-5.0).tag(sync=True)
    max_grad_norm = traitlets.Float(1.0).tag(sync=True)
    result = traitlets.Dict({}).tag(sync=True)
    curve = traitlets.Bytes(b"").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    _INPUTS = ("mode", "noise_multiplier", "target_epsilon", "batch_size", "dataset_size", "epochs",
               "log10_delta", "max_grad_norm")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gen = 0
        self._cond = threading.Condition()
        self._request: tuple[int, dict] | None = None
        self._worker: threading.Thread | None = None
        self._exact: Plan | None = None
        self._exact_gen = -1
        self.last_update_ms: float | None = None  # time to the first (approximate) answer of the last change
        self.observe(self._recompute, names=list(self._INPUTS))
        self._recompute()

    # -- computing
    def _kwargs(self) -> dict:
        return dict(dataset_size=int(self.dataset_size), batch_size=int(self.batch_size), epochs=float(self.epochs),
                    delta=float(f"{10 ** self.log10_delta:.3g}"), max_grad_norm=float(self.max_grad_norm),
                    noise_multiplier=float(self.noise_multiplier) if self.mode == "noise" else None,
                    target_epsilon=float(self.target_epsilon) if self.mode == "target" else None)

    def _recompute(self, _change: Any = None) -> None:
        t0 = time.perf_counter()
        kw = self._kwargs()
        with self._cond:  # serialised with the worker's publishing: a stale exact answer never lands after this
            self._gen += 1
            gen = self._gen
            try:
                quick = quick_plan(**kw)
            except ConfigError as exc:
                with self.hold_sync():
                    self.error = str(exc)
                    self.result = {}
                    self.curve = b""
                    self.busy = False
                self.last_update_ms = (time.perf_counter() - t0) * 1e3
                return
            with self.hold_sync():
                self.error = ""
                self.result = _result_dict(quick)
                self.curve = _curve_bytes(quick)
                self.busy = True
            self.last_update_ms = (time.perf_counter() - t0) * 1e3
            self._request = (gen, kw)
            self._cond.notify()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="tinker-nb-planner", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._request is None:
                    if not self._cond.wait(timeout=30):
                        self._worker = None
                        return
                    if self._request is None:
                        continue
                gen, kw = self._request
                self._request = None
            try:
                p = plan(**kw)
                err = ""
            except ConfigError as exc:
                p, err = None, str(exc)
            except Exception as exc:  # noqa: BLE001 - show it, never kill the worker
                p, err = None, f"{type(exc).__name__}: {exc}"
            with self._cond:
                if gen != self._gen:
                    continue  # a newer request is queued: drop this answer
                with self.hold_sync():
                    if p is None:
                        self.error, self.result, self.curve = err, {}, b""
                    else:
                        self.error, self.result, self.curve = "", _result_dict(p), _curve_bytes(p)
                    self.busy = False
                self._exact, self._exact_gen = p, gen

    def wait(self, timeout: float = 60.0) -> Plan | None:
        """Block until the exact answer for the current inputs is shown (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if self._exact_gen == self._gen and not self.busy:
                    return self._exact
            if self.error and not self.busy:
                return None
            time.sleep(0.01)
        raise TimeoutError("the planner did not finish in time")

    def plan(self) -> Plan:
        """The exact plan for the current slider values."""
        return plan(**self._kwargs())

    # -- display
    def after_cell(self, execution_count: int | None = None) -> None:
        """IPython post_run_cell: once a later cell runs, keep this planner's last plan as static HTML."""
        if self._display_id is None or self._frozen:
            return
        if self.leaving_showing_cell():
            return  # the cell that displayed the planner
        self.freeze()

    def text(self) -> str:
        return repr(self)

    def snapshot_html(self) -> str:
        if self.error:
            return plan_html(None, error=self.error)
        p = self._exact if self._exact is not None and self._exact_gen == self._gen else None
        if p is None:
            try:
                p = self.plan()
            except ConfigError as exc:
                return plan_html(None, error=str(exc))
        return plan_html(p)

    def _repr_mimebundle_(self, **kwargs: Any):
        return self._live_bundle()

    def __repr__(self) -> str:
        r = self.result
        if self.error:
            return f"BudgetPlanner(error: {self.error})"
        sigma = r.get("noise_multiplier")
        return (f"BudgetPlanner(ε{'=' if r.get('exact') else '≈'}{r.get('epsilon', float('nan')):.3f} at "
                f"δ={r.get('delta')}, σ={'?' if sigma is None else f'{sigma:.4g}'}, steps={r.get('steps')}) → "
                f"{r.get('dp_config') or '(computing the exact plan)'}")


def _result_dict(p: Plan) -> dict:
    d = p.to_dict()
    d.pop("curve")
    return d


def _curve_bytes(p: Plan) -> bytes:
    buf = array("f")
    for t, e in p.curve:
        buf.extend((t, e))
    return buf.tobytes()
