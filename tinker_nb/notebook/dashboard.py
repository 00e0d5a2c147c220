"""The live training dashboard: an anywidget bound to a training client's events.

The engine publishes events on the client's EventBus; the dashboard subscribes, keeps the full
history in Python, and pushes at most ``MAX_RATE`` updates a second to the browser (batched with
``hold_sync``; loss history downsampled to ≤ 400 points and sent as float32 bytes). A trailing timer
delivers the last state, and ``close``/``interrupt``/``budget_refused`` events flush at once. Outside a
notebook, or with ``TINKER_NB_NO_WIDGETS=1``, it renders as text/HTML only.
"""

from __future__ import annotations

import html
import os
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import anywidget
import traitlets

__all__ = ["Dashboard", "widgets_enabled"]

STATIC = Path(__file__).parent / "static"
MAX_RATE = 10.0  # browser updates per second, at most
MAX_POINTS = 400


def widgets_enabled() -> bool:
    """False when TINKER_NB_NO_WIDGETS is set or no Jupyter kernel is running."""
    if os.environ.get("TINKER_NB_NO_WIDGETS", "").lower() in ("1", "true", "yes"):
        return False
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip is not None and "Kernel" in type(ip).__name__ or (ip is not None and hasattr(ip, "kernel"))
    except ImportError:
        return False


def _downsample(xs: array, ys: array, n: int = MAX_POINTS) -> bytes:
    m = len(xs)
    if m <= n:
        idx = range(m)
    else:
        idx = [round(i * (m - 1) / (n - 1)) for i in range(n)]
    out = array("f")
    for i in idx:
        out.append(xs[i])
        out.append(ys[i])
    return out.tobytes()


class Dashboard(anywidget.AnyWidget):
    """ε budget, loss, throughput, clipping and audit state of one training client, live."""

    _esm = STATIC / "dashboard.js"
    _css = STATIC / "dashboard.css"

    status = traitlets.Unicode("idle").tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    epsilon = traitlets.Float(0.0).tag(sync=True)
    target_epsilon = traitlets.Float(None, allow_none=True).tag(sync=True)
    delta = traitlets.Float(None, allow_none=True).tag(sync=True)
    accountant = traitlets.Unicode("").tag(sync=True)
    warning = traitlets.Unicode("").tag(sync=True)
    loss = traitlets.Float(None, allow_none=True).tag(sync=True)
    examples_per_s = traitlets.Float(None, allow_none=True).tag(sync=True)
    tokens_per_s = traitlets.Float(None, allow_none=True).tag(sync=True)
    clip_fraction = traitlets.Float(0.0).tag(sync=True)
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
        self._display_id: str | None = None

    # ------------------------------------------------------------------ binding
    @classmethod
    def for_client(cls, tc: Any, *, display: bool = False) -> "Dashboard":
        """Create a dashboard subscribed to ``tc``'s events, initialised from its current state."""
        d = cls()
        d._client = tc
        dp = tc.config.dp_config
        d.target_epsilon = dp.target_epsilon if dp else None
        d.delta = dp.target_delta if dp else None
        d.accountant = (f"{dp.accountant.upper()} (live: upper bound)" if dp else "no DP")
        for rec in tc.session.metrics_history:
            d._record_step(rec)
        d._pending.update(d._step_fields(tc.session.metrics_history[-1]) if tc.session.metrics_history else {})
        d._pending["audit"] = d._audit_state(verify=False)
        d._flush()
        d._unsubscribe = tc.events.subscribe(d._on_event)
        if display:
            d.show()
        return d

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

    @staticmethod
    def _step_fields(rec: dict) -> dict:
        out = {"step": int(rec.get("step") or 0)}
        if rec.get("epsilon") is not None:
            out["epsilon"] = float(rec["epsilon"])
        for k in ("loss", "examples_per_s", "tokens_per_s"):
            if rec.get(k) is not None:
                out[k] = float(rec[k])
        return out

    def _record_step(self, rec: dict) -> None:
        self._steps.append(float(rec.get("step") or 0))
        self._losses.append(float(rec["loss"]) if rec.get("loss") is not None else float("nan"))
        self._eps.append(float(rec["epsilon"]) if rec.get("epsilon") is not None else 0.0)

    # ------------------------------------------------------------------ events
    def _on_event(self, kind: str, payload: dict) -> None:
        with self._lock:
            urgent = False
            if kind == "step":
                self._record_step(payload)
                self._pending.update(self._step_fields(payload), status="training")
            elif kind == "forward_backward":
                if payload.get("examples"):
                    self._pending["clip_fraction"] = float(payload.get("clip_fraction") or 0.0)
                self._pending.setdefault("status", "training")
            elif kind == "budget_warning":
                self._pending["warning"] = "⚠ 80% of the ε budget is spent"
            elif kind == "budget_refused":
                self._pending.update(status="refused", warning="⛔ budget exhausted: the last step was refused")
                urgent = True
            elif kind == "save":
                self._pending["checkpoints"] = self.checkpoints + 1
                urgent = True
            elif kind == "interrupt":
                self._pending["status"] = "interrupted"
                urgent = True
            elif kind == "close":
                self._pending["status"] = "done"
                urgent = True
            elif kind == "audit":
                self._audit_dirty = True
            now = time.monotonic()
            if urgent or now - self._last_flush >= 1.0 / MAX_RATE:
                self._flush()
            elif self._timer is None:
                self._timer = threading.Timer(1.0 / MAX_RATE, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        """Send every pending change in one message (hold_sync)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            pending, self._pending = self._pending, {}
            if (getattr(self, "_audit_dirty", False) and self._client is not None
                    and time.monotonic() - getattr(self, "_audit_refreshed", 0.0) >= 1.0):
                try:
                    pending["audit"] = self._audit_state(verify=False)
                except Exception:  # noqa: BLE001 - the ledger may be busy; next flush retries
                    pass
                self._audit_dirty = False
            if len(self._steps) and (not self.loss_history or len(self._steps) != getattr(self, "_sent_n", -1)):
                pending["loss_history"] = _downsample(self._steps, self._losses)
                pending["eps_history"] = _downsample(self._steps, self._eps)
                self._sent_n = len(self._steps)
            if not pending:
                return
            with self.hold_sync():
                for k, v in pending.items():
                    setattr(self, k, v)
            self.messages_sent += 1
            self._last_flush = time.monotonic()

    # ------------------------------------------------------------------ lifecycle and display
    def finish(self, *, status: str | None = None, verify: bool = True) -> "Dashboard":
        """Final flush (verifying the ledger) and, in a notebook, a static snapshot saved with the output."""
        # Wait for queued training work OUTSIDE the lock: the worker thread publishes events that need it.
        m = self._client.get_dp_metrics() if self._client is not None and not self._client.closed else None
        audit = self._audit_state(verify=verify) if self._client is not None else None
        with self._lock:
            if m is not None and m.dp_enabled:
                self._pending["epsilon"] = float(m.epsilon_spent)
                self._pending["accountant"] = f"{m.accountant.upper()} (reported)"
            if audit is not None:
                self._pending["audit"] = audit
            if status:
                self._pending["status"] = status
            elif self.status in ("idle", "training"):
                self._pending["status"] = "done"
            self._flush()
        if self._display_id is not None:
            from IPython.display import update_display

            update_display(self._mimebundle(), display_id=self._display_id, raw=True)
        return self

    def detach(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None

    def show(self) -> None:
        """Display with a display id, so ``finish()`` can attach the final static snapshot."""
        from IPython.display import display

        self._display_id = f"tinker-nb-dashboard-{id(self)}"
        display(self._mimebundle(), display_id=self._display_id, raw=True)

    def _mimebundle(self) -> dict:
        bundle = {"text/plain": self.text(), "text/html": self.snapshot_html()}
        if widgets_enabled():
            bundle["application/vnd.jupyter.widget-view+json"] = {"version_major": 2, "version_minor": 0,
                                                                  "model_id": self.model_id}
        return bundle

    def _repr_mimebundle_(self, **kwargs: Any):
        return self._mimebundle()

    def __repr__(self) -> str:
        return self.text()

    def text(self) -> str:
        tgt = f"{self.target_epsilon:g}" if self.target_epsilon else "∞"
        loss = f"{self.loss:.3f}" if self.loss is not None else "–"
        a = self.audit or {}
        return (f"tinker_nb [{self.status}] step {self.step} | ε {self.epsilon:.3f} / {tgt} "
                f"({self.accountant or 'no DP'}) | loss {loss} (not private) | checkpoints {self.checkpoints} | "
                f"ledger {a.get('entries', '–')} entries, verified={a.get('verified')}")

    def snapshot_html(self) -> str:
        """Self-contained static HTML (inline CSS and SVG, no script): renders on GitHub and after reload."""
        tgt = self.target_epsilon
        frac = min(self.epsilon / tgt, 1.0) if tgt else 0.0
        color = "#e74c3c" if frac >= 1 else "#f39c12" if frac >= 0.8 else "#2e86de"
        pts = ""
        n = len(self._steps)
        vals = [(s, l) for s, l in zip(self._steps, self._losses) if l == l]
        if len(vals) >= 2:
            x0, x1 = vals[0][0], vals[-1][0]
            y0, y1 = min(v for _, v in vals), max(v for _, v in vals)
            step = max(1, len(vals) // MAX_POINTS)
            pts = " ".join(f"{4 + 252 * (x - x0) / max(x1 - x0, 1e-9):.1f},{66 - 62 * (y - y0) / max(y1 - y0, 1e-9):.1f}"
                           for x, y in vals[::step])
        a = self.audit or {}
        e = html.escape
        return (
            '<div style="font-family:system-ui,sans-serif;font-size:13px;border:1px solid #ddd;border-radius:8px;'
            'padding:8px 10px;max-width:900px">'
            f'<b>tinker_nb</b> — <span>{e(self.status)}</span> · step {self.step} ({n} recorded)<br>'
            f'<div style="margin:6px 0">privacy budget ε <b>{self.epsilon:.3f}</b> / {e(f"{tgt:g}" if tgt else "∞")} '
            f'(δ={e(f"{self.delta:g}" if self.delta else "–")}, {e(self.accountant or "no DP")})'
            f'<div style="height:10px;background:#eee;border-radius:5px;width:300px">'
            f'<div style="height:10px;border-radius:5px;background:{color};width:{300 * frac:.0f}px"></div></div>'
            f'<span style="color:#c0392b">{e(self.warning)}</span></div>'
            f'<div>loss (not private, diagnostic): {e(f"{self.loss:.3f}" if self.loss is not None else "–")}</div>'
            f'<svg width="260" height="70" style="border:1px solid #eee"><polyline fill="none" stroke="#e67e22" '
            f'stroke-width="2" points="{pts}"/></svg>'
            f'<div>checkpoints {self.checkpoints} · audit ledger {e(str(a.get("entries", "–")))} entries, head '
            f'<code>{e(str(a.get("head_hash", ""))[:16])}</code>, verified: {e(str(a.get("verified")))}</div></div>')
