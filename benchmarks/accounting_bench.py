"""Accounting cost: the live ε update per step, and the exact ε (PLD / PRV) at a checkpoint."""

from __future__ import annotations

import time
from typing import Any

from .common import stats


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
            accounting._eps_cached.cache_clear()
            t = time.perf_counter()
            accounting.epsilon([(1.0, 0.01, steps + r)], delta=1e-5, accountant=acct)
            samples.append(time.perf_counter() - t)
        exact[acct] = stats(samples)
    return {"settings": {"noise_multiplier": 1.0, "sample_rate": 0.01, "steps": steps, "delta": 1e-5},
            "live_update_seconds": stats(per_step),
            "live_update_ms_median": 1000 * stats(per_step)["median"],
            "exact_epsilon_seconds": exact}
