"""Accounting cost: the live ε update per step, and the exact ε (PLD / PRV) at a checkpoint."""

from __future__ import annotations

import time
from typing import Any

from .common import scaled, summary


def accounting_section(*, steps: int, repeats: int) -> dict[str, Any]:
    from tinker_nb import accounting

    live = accounting.LiveRDP(1.0, 0.01)
    per_step = []
    for _ in range(steps):
        t = time.perf_counter()
        live.step()
        live.epsilon(1e-5)
        per_step.append(time.perf_counter() - t)
    exact: dict[str, Any] = {}
    for acct in ("pld", "prv", "rdp"):
        samples = []
        for r in range(repeats):
            cache = getattr(accounting, "_eps_cached", None)
            if cache is not None and hasattr(cache, "cache_clear"):
                cache.cache_clear()
            t = time.perf_counter()
            accounting.epsilon([(1.0, 0.01, steps + r)], delta=1e-5, accountant=acct)
            samples.append(time.perf_counter() - t)
        exact[acct] = scaled(summary(samples, kind="absolute", unit="s"), 1000, "ms")
    live_ms = scaled(summary(per_step, kind="absolute", unit="s"), 1000, "ms")
    return {"settings": {"noise_multiplier": 1.0, "sample_rate": 0.01, "steps": steps, "delta": 1e-5},
            "live_update_ms": live_ms, "exact_epsilon_ms": exact,
            "headline": [("live ε update per step (ms)", live_ms, "<= 0.1"),
                         ("exact ε PLD at checkpoint (ms)", exact["pld"], None),
                         ("exact ε PRV at checkpoint (ms)", exact["prv"], None)]}
