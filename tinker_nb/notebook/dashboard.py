"""The live training dashboard: an anywidget bound to a training client's events.

The engine publishes events on the client's EventBus; the dashboard subscribes, keeps the full
history in Python, and pushes at most ``MAX_RATE`` updates a second to the browser (batched with
``hold_sync``; histories downsampled to ≤ ``MAX_POINTS`` points and sent as float32 bytes). A trailing
timer delivers the last state, and ``close``/``interrupt``/``budget_refused``/``save`` flush at once.

When a run ends (``finish()``, the client closes, or the training cell completes) the display becomes a
static HTML snapshot that JupyterLab shows without a kernel (see :mod:`._display`). Outside a
notebook, or with ``TINKER_NB_NO_WIDGETS=1``, it renders as text/HTML only.
"""

from __future__ import annotations

import html
import math
import os
import threading
import time
from array import array
from collections import deque
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ._display import LiveDisplay

__all__ = ["Dashboard", "widgets_enabled"]

STATIC = Path(__file__).parent / "static"
MAX_RATE = 10.0  # browser updates per second, at most
MAX_POINTS = 400
RATE_WINDOW = 20  # steps/s over the last RATE_WINDOW steps


def widgets_enabled() -> bool:
    """False when TINKER_NB_NO_WIDGETS is set or no Jupyter kernel is running."""
    if os.environ.get("TINKER_NB_NO_WIDGETS", "").lower() in ("1", "true", "yes"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    return ip is not None and ("Kernel" in type(ip).__name__ or hasattr(ip, "kernel"))


def _downsample(xs: array, ys: array, n: int = MAX_POINTS) -> bytes:
    m = len(xs)
    idx = range(m) if m <= n else [round(i * (m - 1) / (n - 1)) for i in range(n)]
    out = array("f")
    for i in idx:
        out.append(xs[i])
        out.append(ys[i])
    return out.tobytes()


def fmt_duration(s: float | None) -> str:
    """``75`` → ``1:15``; ``3725`` → ``1:02:05``; None → ``–``."""
    if s is None or not math.isfinite(s) or s < 0:
        return "–"
    s = round(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def percent_spent(epsilon: float, target: float | None) -> float | None:
    """Share of the ε budget spent, in percent (floored to 0.1 so it never reads as more room than there is)."""
    if not target:
        return None
    return math.floor(1000.0 * epsilon / target) / 10.0


# Inline SVG icons (no emoji: they render as boxes without an emoji font).
ICON_WARN = ('<svg class="tnb-icon" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">'
             '<path d="M8 1.5 15 14H1z" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linejoin="round"/>'
             '<path d="M8 6v4M8 11.5v1.2" stroke="currentColor" stroke-width="1.5"/></svg>')
ICON_STOP = ('<svg class="tnb-icon" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">'
             '<circle cx="8" cy="8" r="6.5" fill="none" stroke="currentColor" stroke-width="1.5"/>'
             '<path d="M4 8h8" stroke="currentColor" stroke-width="2"/></svg>')


class Dashboard(LiveDisplay, anywidget.AnyWidget):
    """ε budget, loss, progress, throughput, clipping and audit state of one training client, live."""

    _esm = STATIC / "dashboard.js"
    _css = STATIC / "dashboard.css"

    status = traitlets.Unicode("idle").tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    total_steps = traitlets.Int(None, allow_none=True).tag(sync=True)
    elapsed_s = traitlets.Float(0.0).tag(sync=True)
    eta_s = traitlets.Float(None, allow_none=True).tag(sync=True)
    steps_per_s = traitlets.Float(None, allow_none=True).tag(sync=True)
    epsilon = traitlets.Float(0.0).tag(sync=True)
    epsilon_kind = traitlets.Unicode("live upper bound").tag(sync=True)
    target_epsilon = traitlets.Float(None, allow_none=True).tag(sync=True)
    delta = traitlets.Float(None, allow_none=True).tag(sync=True)
    accountant = traitlets.Unicode("").tag(sync=True)
    sampling = traitlets.Unicode("").tag(sync=True)
    warning = traitlets.Unicode("").tag(sync=True)
    loss = traitlets.Float(None, allow_none=True).tag(sync=True)
    examples_per_s = traitlets.Float(None, allow_none=True).tag(sync=True)
    tokens_per_s = traitlets.Float(None, allow_none=True).tag(sync=True)
    clip_fraction = traitlets.Float(None, allow_none=True).tag(sync=True)
    checkpoints = traitlets.Int(0).tag(sync=True)
    audit = traitlets.Dict({}).tag(sync=True)
    loss_history = traitlets.Bytes(b"").tag(sync=True)
    eps_history = traitlets.Bytes(b"").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self._pending: dict[str, Any] = {}
        self._steps, self._losses, self._eps = array("f"), array("f"), array("f")
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None
        self._unsubscribe = None
        self._client = None
        self.messages_sent = 0
        self._t_start: float | None = None  # wall time the current run segment started
        self._t_last: float | None = None
        self._step_times: deque[tuple[int, float]] = deque(maxlen=RATE_WINDOW)
        self._clip_n = 0
        self._clip_k = 0
        self._dirty = False  # events since the last freeze
        self._audit_dirty = False
        self._audit_refreshed = 0.0
        self._sent_n = -1
        self._freezer: threading.Thread | None = None

    # ------------------------------------------------------------------ binding
    @classmethod
    def for_client(cls, tc: Any, *, display: bool = False, total_steps: int | None = None) -> Dashboard:
        """A dashboard subscribed to ``tc``'s events, initialised from its current state.

        Opened after training, it shows what ``%tinker status`` shows: the reported ε (PLD/PRV), the
        steps taken, the workspace's checkpoints.
        """
        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                        or total_steps < 1):
            from ..errors import ConfigError

            raise ConfigError(f"total_steps must be a positive integer (the planned steps), got {total_steps!r}.")
        d = cls()
        d._client = tc
        dp = tc.config.dp_config
        d.target_epsilon = dp.target_epsilon if dp else None
        d.delta = dp.target_delta if dp else None
        d.accountant = dp.accountant.upper() if dp else "no DP"
        if total_steps is not None:
            d.total_steps = int(total_steps)
        hist = list(tc.metrics_history())  # waits for queued steps: a training cell may return with some in flight
        for rec in hist:
            d._record_step(rec)
        if hist:
            d._pending.update(d._step_fields(hist[-1]))
            d._pending.update(d._history_fields(hist))
            d._pending["status"] = "done"
            d._pending.update(d._reported_fields(tc.get_dp_metrics()))
        try:
            d._pending["checkpoints"] = len(tc.list_checkpoints())
        except Exception:  # noqa: BLE001 - a locked store must not stop the dashboard
            pass
        d._pending["audit"] = d._audit_state(verify=False)
        d._flush()
        d._unsubscribe = tc.events.subscribe(d._on_event)
        if display:
            d.show()
        return d

    @staticmethod
    def _history_fields(hist: list[dict]) -> dict:
        """Clipping, elapsed time and steps/s of the steps already taken (so a late dashboard shows the run)."""
        out: dict[str, Any] = {}
        n = sum(int(r.get("examples") or 0) for r in hist)
        if n and all(r.get("clipped") is not None for r in hist):
            out["clip_fraction"] = sum(int(r["clipped"]) for r in hist) / n
        times = [float(r["time"]) for r in hist if r.get("time") is not None]
        if len(times) == len(hist) >= 2 and times[-1] > times[0]:
            # (the first step's own "seconds" also counts the idle time before it: use the mean step time)
            per_step = (times[-1] - times[0]) / (len(times) - 1)
            out["elapsed_s"] = per_step * len(times)
            out["steps_per_s"] = 1.0 / per_step
        return out

    @staticmethod
    def _reported_fields(m: Any) -> dict:
        if not getattr(m, "dp_enabled", False):
            return {"accountant": "no DP", "epsilon_kind": "no DP"}
        out = {"epsilon": float(m.epsilon_spent), "epsilon_kind": "reported",
               "accountant": str(m.accountant or "").upper(), "sampling": str(m.sampling or "")}
        if getattr(m, "target_epsilon", None):
            out["target_epsilon"] = float(m.target_epsilon)
        return out

    def _audit_state(self, *, verify: bool) -> dict:
        tc = self._client
        if tc is None:
            return {}
        led = tc.service.ledger
        n, head = led.head_info()
        st = {"entries": n, "head_hash": head}
        rep = led.verify() if verify else led.last_verification
        st["verified"] = None if rep is None else bool(rep.ok)
        if verify:
            cps = led.checkpoints()
            st["last_checkpoint"] = cps[-1].size if cps else None
        else:
            st["last_checkpoint"] = (self.audit or {}).get("last_checkpoint")
        self._audit_refreshed = time.monotonic()
        return st

    def _step_fields(self, rec: dict) -> dict:
        out: dict[str, Any] = {"step": int(rec.get("step") or 0)}
        if rec.get("epsilon") is not None:
            out["epsilon"] = self._live_bound(rec)
            out["epsilon_kind"] = "live upper bound"
        for k in ("loss", "examples_per_s", "tokens_per_s"):
            if rec.get(k) is not None:
                out[k] = float(rec[k])
        if rec.get("target_epsilon") is not None:
            out["target_epsilon"] = float(rec["target_epsilon"])
        total = rec.get("planned_steps") or self.total_steps
        if total:
            out["total_steps"] = int(total)
        return out

    @staticmethod
    def _live_bound(rec: dict) -> float:
        """The step's live ε bound, capped at the target: a step the budget allowed spent at most the target.

        (The live value is a cheap RDP-based bound; the engine admits a step only if its tight ε stays
        within ``target_epsilon``, so ``min(bound, target)`` is still an upper bound, and the gauge never
        reads "over budget" for a run that is not.)
        """
        eps = float(rec["epsilon"])
        tgt = rec.get("target_epsilon")
        return min(eps, float(tgt)) if tgt else eps

    def _record_step(self, rec: dict) -> None:
        self._steps.append(float(rec.get("step") or 0))
        self._losses.append(float(rec["loss"]) if rec.get("loss") is not None else float("nan"))
        self._eps.append(self._live_bound(rec) if rec.get("epsilon") is not None else 0.0)

    def _timing_fields(self, step: int, now: float) -> dict:
        if self._t_start is None:
            return {}
        out: dict[str, Any] = {"elapsed_s": max(0.0, now - self._t_start)}
        if len(self._step_times) >= 2:
            (s0, t0), (s1, t1) = self._step_times[0], self._step_times[-1]
            if t1 > t0 and s1 > s0:
                rate = (s1 - s0) / (t1 - t0)
                out["steps_per_s"] = rate
                total = self._pending.get("total_steps", self.total_steps)
                if total:
                    out["eta_s"] = max(0, total - step) / rate
        return out

    # ------------------------------------------------------------------ events
    def _on_event(self, kind: str, payload: dict) -> None:
        thaw = False
        with self._lock:
            urgent = False
            now = time.time()
            if kind in ("step", "forward_backward"):
                if self._pending.get("status", self.status) != "training":  # a new run segment starts
                    self._t_start = now
                    self._step_times.clear()
                self._dirty = True
                thaw = self._frozen
            if kind == "step":
                self._record_step(payload)
                t = float(payload.get("time") or now)
                self._t_last = t
                step = int(payload.get("step") or 0)
                self._step_times.append((step, t))
                fields = self._step_fields(payload)
                if self._clip_n:
                    fields["clip_fraction"] = self._clip_k / self._clip_n
                self._pending.update(fields, status="training")
                self._pending.update(self._timing_fields(step, t))
                if self._pending.get("warning", self.warning).startswith(("budget exhausted", "interrupted")):
                    self._pending["warning"] = ""  # a new step: the last refusal or interrupt is over
            elif kind == "forward_backward":
                n = int(payload.get("examples") or 0)
                if n:
                    self._clip_n += n
                    self._clip_k += int(payload.get("clipped") or round(float(payload.get("clip_fraction") or 0) * n))
                if self._pending.get("status", self.status) != "training":
                    self._pending["status"] = "training"
            elif kind == "budget_refused":
                self._pending.update(status="refused", warning="budget exhausted: the last step was refused, "
                                                               "nothing was changed")
                urgent = True
            elif kind == "save":
                self._pending["checkpoints"] = self._pending.get("checkpoints", self.checkpoints) + 1
                urgent = True
            elif kind == "interrupt":
                self._pending["status"] = "interrupted"
                if payload.get("message"):  # what ran and what was cancelled (never charged)
                    self._pending["warning"] = str(payload["message"])
                urgent = True
            elif kind == "close":
                self._pending["status"] = "done" if self.status != "interrupted" else "interrupted"
                urgent = True
            elif kind == "audit":
                self._audit_dirty = True
            t = time.monotonic()
            if urgent or t - self._last_flush >= 1.0 / MAX_RATE:
                self._flush()
            elif self._timer is None:
                self._timer = threading.Timer(1.0 / MAX_RATE, self._flush)
                self._timer.daemon = True
                self._timer.start()
        if thaw:
            self.thaw()
        if kind == "close":
            self.freeze()

    def _flush(self) -> None:
        """Send every pending change in one message (hold_sync)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            pending, self._pending = self._pending, {}
            if self._audit_dirty and self._client is not None and time.monotonic() - self._audit_refreshed >= 1.0:
                try:
                    pending["audit"] = self._audit_state(verify=False)
                except Exception:  # noqa: BLE001 - the ledger may be busy; the next flush retries
                    pass
                self._audit_dirty = False
            if len(self._steps) and len(self._steps) != self._sent_n:
                pending["loss_history"] = _downsample(self._steps, self._losses)
                pending["eps_history"] = _downsample(self._steps, self._eps)
                self._sent_n = len(self._steps)
            pending = {k: v for k, v in pending.items() if getattr(self, k) != v}
            if not pending:
                return
            with self.hold_sync():
                for k, v in pending.items():
                    setattr(self, k, v)
            self.messages_sent += 1
            self._last_flush = time.monotonic()

    # ------------------------------------------------------------------ lifecycle and display
    def finish(self, *, status: str | None = None, verify: bool = True) -> Dashboard:
        """Final state (reported ε from PLD/PRV, ledger verified), then a static snapshot in the output."""
        self.before_freeze(final=True, status=status, verify=verify)
        self.freeze()
        return self

    def before_freeze(self, *, final: bool = False, status: str | None = None, verify: bool = False) -> None:
        """Bring the state up to date for a snapshot (waits for queued training work)."""
        tc = self._client
        # Wait for queued work OUTSIDE the lock: the worker thread publishes events that need it.
        m = None
        if tc is not None and not tc.closed:
            try:
                m = tc.get_dp_metrics()
            except Exception:  # noqa: BLE001 - e.g. a refused step: show what ran
                m = None
        audit = None
        if tc is not None:
            try:
                audit = self._audit_state(verify=verify)
            except Exception:  # noqa: BLE001
                audit = None
        with self._lock:
            if m is not None and m.steps == (self._pending.get("step", self.step)):
                self._pending.update(self._reported_fields(m))
            if audit is not None:
                self._pending["audit"] = audit
            if status:
                self._pending["status"] = status
            elif self._pending.get("status", self.status) == "training":
                self._pending["status"] = "done"
            if self._t_last is not None and self._t_start is not None:
                self._pending["elapsed_s"] = max(0.0, self._t_last - self._t_start)
                self._pending["eta_s"] = None
            self._flush()
            self._dirty = False

    def after_cell(self, execution_count: int | None = None) -> None:
        """IPython post_run_cell: once the cell's queued training work is done, freeze to a snapshot."""
        if self._display_id is None or self._frozen:
            return
        if self._freezer is not None and self._freezer.is_alive():
            return
        own_cell = self.leaving_showing_cell()
        if not self._dirty:
            # Not training (opened after training, or never trained on): once a later cell runs, keep a static
            # snapshot, so a restart from the page cannot leave "model not found"; training thaws it.
            with self._lock:
                training = self._pending.get("status", self.status) == "training"
            if not own_cell and not training:
                self.freeze()
            return

        def work() -> None:
            try:
                self.before_freeze()
                if not self._dirty:
                    self.freeze()
            except Exception:  # noqa: BLE001 - never break the kernel from a display hook
                pass

        self._dirty = False
        self._freezer = threading.Thread(target=work, name="tinker-nb-dashboard-freeze", daemon=True)
        self._freezer.start()

    def detach(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None

    def show(self) -> Dashboard:
        """Display the live view with a display id; it becomes a static snapshot when the run ends."""
        super().show()
        return self

    def _mimebundle(self) -> dict:
        return self._live_bundle()

    def _repr_mimebundle_(self, **kwargs: Any):
        return self._live_bundle()

    def __repr__(self) -> str:
        return self.text()

    # ------------------------------------------------------------------ text and static HTML
    def _progress_text(self) -> str:
        total = f"/{self.total_steps}" if self.total_steps else ""
        rate = f", {self.steps_per_s:.2f} steps/s" if self.steps_per_s else ""
        eta = f", ETA {fmt_duration(self.eta_s)}" if self.eta_s is not None and self.status == "training" else ""
        return f"step {self.step}{total} (elapsed {fmt_duration(self.elapsed_s)}{eta}{rate})"

    def text(self) -> str:
        tgt = f"{self.target_epsilon:g}" if self.target_epsilon else "∞"
        pct = percent_spent(self.epsilon, self.target_epsilon)
        pct_s = f", {pct:.1f}% spent" if pct is not None else ""
        loss = f"{self.loss:.3f}" if self.loss is not None else "–"
        a = self.audit or {}
        return (f"tinker_nb [{self.status}] {self._progress_text()} | ε {self.epsilon:.3f} / {tgt}{pct_s} "
                f"({self.epsilon_kind}, {self.accountant or 'no DP'}) | loss {loss} (not private) | "
                f"checkpoints {self.checkpoints} | ledger {a.get('entries', '–')} entries, verified={a.get('verified')}")

    def snapshot_html(self) -> str:
        """Self-contained static HTML (inline styles and SVG, no script): renders without a kernel."""
        e = html.escape
        tgt = self.target_epsilon
        frac = min(self.epsilon / tgt, 1.0) if tgt else 0.0
        pct = percent_spent(self.epsilon, tgt)
        level = "#d9534f" if frac >= 1 else "#e8a33d" if frac >= 0.8 else "#3b82c4"
        fg = "var(--jp-ui-font-color1, #222)"
        fg2 = "var(--jp-ui-font-color2, #555)"
        bg = "var(--jp-layout-color1, #fff)"
        bd = "var(--jp-border-color2, #ddd)"
        track = "var(--jp-layout-color3, #e5e5e5)"
        card = f"border:1px solid {bd};border-radius:6px;padding:6px 8px;min-width:0;overflow:hidden"
        label = f"color:{fg2};font-size:11px;text-transform:uppercase;letter-spacing:.04em;margin-bottom:4px"
        np_ = "text-transform:none;color:#c0762b;font-size:10px"
        vals = [(s, v) for s, v in zip(self._steps, self._losses) if v == v]
        spark = ""
        if len(vals) >= 2:
            x0, x1 = vals[0][0], vals[-1][0]
            y0, y1 = min(v for _, v in vals), max(v for _, v in vals)
            stride = max(1, len(vals) // MAX_POINTS)
            pts = " ".join(f"{2 + 196 * (x - x0) / max(x1 - x0, 1e-9):.1f},{48 - 44 * (y - y0) / max(y1 - y0, 1e-9):.1f}"
                           for x, y in vals[::stride])
            spark = (f'<svg viewBox="0 0 200 50" preserveAspectRatio="none" style="display:block;width:100%;'
                     f'height:50px"><polyline fill="none" stroke="#e07b39" stroke-width="1.5" '
                     f'vector-effect="non-scaling-stroke" points="{pts}"/></svg>'
                     f'<div style="display:flex;justify-content:space-between;font-size:10px;color:{fg2}">'
                     f'<span>step {int(x0)}</span><span>{y0:.3g}–{y1:.3g}</span><span>step {int(x1)}</span></div>')
        a = self.audit or {}
        verified = a.get("verified")
        ver = "not yet" if verified is None else ("intact" if verified else "BROKEN")
        warn = ""
        if self.status == "refused" or self.warning:
            warn = (f'<div style="color:#d9534f;font-weight:600">{ICON_STOP if self.status == "refused" else ICON_WARN} '
                    f'{e(self.warning)}</div>')
        elif pct is not None and pct >= 80:
            warn = f'<div style="color:#e8a33d;font-weight:600">{ICON_WARN} {pct:.1f}% of the ε budget spent</div>'
        total = f" / {self.total_steps}" if self.total_steps else ""
        prog = (f'<div style="height:6px;background:{track};border-radius:3px;overflow:hidden;margin:4px 0">'
                f'<div style="height:6px;background:#3b82c4;width:{100 * min(self.step / self.total_steps, 1):.1f}%">'
                f'</div></div>' if self.total_steps else "")
        rate = f"{self.steps_per_s:.2f}" if self.steps_per_s else "–"
        exs = f"{self.examples_per_s:.1f}" if self.examples_per_s else "–"
        clip = f"{100 * self.clip_fraction:.0f}%" if self.clip_fraction is not None else "–"
        loss = f"{self.loss:.3f}" if self.loss is not None else "–"
        return (
            f'<div class="tnb-static" style="font-family:var(--jp-ui-font-family, system-ui, sans-serif);'
            f'font-size:13px;color:{fg};background:{bg};border:1px solid {bd};border-radius:8px;padding:8px 10px;'
            f'max-width:1100px;box-sizing:border-box">'
            f'<div style="display:flex;justify-content:space-between;margin-bottom:6px"><b>tinker_nb</b>'
            f'<span>{e(self.status)} · snapshot (static)</span></div>'
            f'<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:8px">'
            f'<div class="tnb-scard" style="{card}"><div style="{label}">privacy budget ε</div>'
            f'<div style="height:10px;background:{track};border-radius:5px;overflow:hidden">'
            f'<div style="height:10px;background:{level};width:{100 * frac:.1f}%"></div></div>'
            f'<div><b data-k="epsilon" style="font-size:20px">{self.epsilon:.3f}</b> / {e(f"{tgt:g}" if tgt else "∞ (no DP)")}'
            f'{e(f" · {pct:.1f}% spent" if pct is not None else "")}</div>'
            f'<div style="color:{fg2};font-size:12px">{e(self.epsilon_kind)} · {e(self.accountant or "no DP")} · '
            f'δ={e(f"{self.delta:.0e}" if self.delta else "–")}</div>{warn}</div>'
            f'<div class="tnb-scard" style="{card}"><div style="{label}">loss <span style="{np_}">not private (diagnostic)</span></div>'
            f'{spark}<div style="color:{fg2};font-size:12px">last {e(loss)}</div></div>'
            f'<div class="tnb-scard" style="{card}"><div style="{label}">progress</div><div>step <b data-k="step">{self.step}</b>{total}</div>{prog}'
            f'<div style="color:{fg2};font-size:12px">elapsed {fmt_duration(self.elapsed_s)} · {rate} steps/s · '
            f'{exs} ex/s</div><div style="color:{fg2};font-size:12px">clipped {clip} '
            f'<span style="{np_}">(not private)</span> · checkpoints {self.checkpoints}</div></div>'
            f'<div class="tnb-scard" style="{card}"><div style="{label}">audit ledger</div>'
            f'<div style="color:{fg2};font-size:12px">entries <b>{e(str(a.get("entries", "–")))}</b></div>'
            f'<div style="color:{fg2};font-size:12px;font-family:var(--jp-code-font-family, monospace);'
            f'overflow:hidden;text-overflow:ellipsis">head {e(str(a.get("head_hash") or "")[:16])}</div>'
            f'<div style="color:{fg2};font-size:12px">verified: {e(ver)}</div></div>'
            f'</div></div>')

