"""Plan privacy before training: (σ or target ε, batch, N, epochs, δ) → ε, steps, and the ε-vs-steps curve."""

from __future__ import annotations

from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .. import accounting
from ..errors import ConfigError

__all__ = ["plan", "Plan", "BudgetPlanner"]

STATIC = Path(__file__).parent / "static"


@dataclass
class Plan:
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float
    epsilon_rdp: float
    delta: float
    accountant: str
    curve: list[tuple[int, float]]
    dp_config: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(*, dataset_size: int, batch_size: int, epochs: float, delta: float = 1e-5,
         noise_multiplier: float | None = None, target_epsilon: float | None = None, max_grad_norm: float = 1.0,
         accountant: str = "pld", points: int = 20) -> Plan:
    """ε for a planned run, or the σ that reaches ``target_epsilon``; with the ε(steps) curve."""
    if dataset_size < 1 or batch_size < 1 or batch_size > dataset_size:
        raise ConfigError("need 1 <= batch_size <= dataset_size.")
    if not delta < 1 / dataset_size:
        raise ConfigError(f"delta must be < 1/N = {1 / dataset_size:.3g}.")
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ConfigError("give exactly one of noise_multiplier or target_epsilon.")
    q = batch_size / dataset_size
    steps = accounting.steps_for_epochs(sample_rate=q, epochs=epochs)
    sigma = noise_multiplier if noise_multiplier is not None else accounting.calibrate_noise_multiplier(
        target_epsilon=target_epsilon, delta=delta, sample_rate=q, steps=steps, accountant=accountant)
    eps = accounting.epsilon([(sigma, q, steps)], delta=delta, accountant=accountant)
    live = accounting.LiveRDP(sigma, q)
    live.step(steps)
    xs = sorted({max(1, round(steps * (i + 1) / points)) for i in range(points)})
    curve = [(t, accounting.epsilon([(sigma, q, t)], delta=delta, accountant=accountant)) for t in xs]
    cfg = (f"DPConfig(noise_multiplier={sigma:.4g}, max_grad_norm={max_grad_norm:g}, "
           f"target_epsilon={(target_epsilon or round(eps, 3)):g}, target_delta={delta:g})")
    return Plan(sigma, q, steps, eps, live.epsilon(delta), delta, accountant, curve, cfg)


class BudgetPlanner(anywidget.AnyWidget):
    """Sliders for σ (or target ε), batch size, data set size, epochs and δ; shows ε and the ε-vs-steps curve."""

    _esm = STATIC / "planner.js"
    _css = STATIC / "dashboard.css"

    mode = traitlets.Unicode("noise").tag(sync=True)  # "noise" or "target"
    noise_multiplier = traitlets.Float(1.0).tag(sync=True)
    target_epsilon = traitlets.Float(8.0).tag(sync=True)
    batch_size = traitlets.Int(64).tag(sync=True)
    dataset_size = traitlets.Int(10_000).tag(sync=True)
    epochs = traitlets.Float(3.0).tag(sync=True)
    log10_delta = traitlets.Float(-5.0).tag(sync=True)
    result = traitlets.Dict({}).tag(sync=True)
    curve = traitlets.Bytes(b"").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.observe(self._recompute, names=["mode", "noise_multiplier", "target_epsilon", "batch_size",
                                             "dataset_size", "epochs", "log10_delta"])
        self._recompute()

    def _recompute(self, _change: Any = None) -> None:
        try:
            p = plan(dataset_size=self.dataset_size, batch_size=self.batch_size, epochs=self.epochs,
                     delta=10 ** self.log10_delta,
                     noise_multiplier=self.noise_multiplier if self.mode == "noise" else None,
                     target_epsilon=self.target_epsilon if self.mode == "target" else None)
        except ConfigError as exc:
            self.error = str(exc)
            return
        buf = array("f")
        for t, e in p.curve:
            buf.extend((t, e))
        with self.hold_sync():
            self.error = ""
            self.result = {k: v for k, v in p.to_dict().items() if k != "curve"}
            self.curve = buf.tobytes()

    def plan(self) -> Plan:
        return plan(dataset_size=self.dataset_size, batch_size=self.batch_size, epochs=self.epochs,
                    delta=10 ** self.log10_delta,
                    noise_multiplier=self.noise_multiplier if self.mode == "noise" else None,
                    target_epsilon=self.target_epsilon if self.mode == "target" else None)

    def __repr__(self) -> str:
        r = self.result
        return (f"BudgetPlanner(ε={r.get('epsilon', float('nan')):.3f} at δ={r.get('delta')}, σ={r.get('noise_multiplier')}, "
                f"steps={r.get('steps')}) → {r.get('dp_config')}")
