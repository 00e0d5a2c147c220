"""bench-full: the privacy audit. Audit time vs a plain run of the same steps (target <= 1.2x), and the
figures of notebooks/05_privacy_audit.ipynb's two runs (non-DP and DP at ε = 8 on the same data)."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from .common import summary


def _one(value: float, unit: str) -> dict[str, Any]:
    """A computed figure of one run (no interval)."""
    return {"kind": "absolute", "unit": unit, "n": 1, "median": float(value), "ci": None, "exact": True,
            "half_width": float("nan"), "samples": [float(value)]}


def _plain_run(config, *, n_records: int, steps: int) -> dict[str, float]:
    """The same training without canaries or scoring: same config, same data set size, same number of draws."""
    from tinker_nb import ServiceClient
    from tinker_nb.engine.demo_data import demo_records

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinker-nb-bench-plain-") as tmp:
        svc = ServiceClient(workspace=f"{tmp}/ws", tenant=config.tenant, key_file=f"{tmp}/root.key")
        tc = svc.create_training_client(config)
        try:
            tc.attach_dataset(demo_records(n_records, seed=3))
            t1 = time.perf_counter()
            for d in tc.poisson_batches(steps=steps):
                fb = tc.forward_backward(d)
                if config.dp_config is None and fb.result().examples == 0:
                    continue
                tc.optim_step().result()
            t2 = time.perf_counter()
            tc.get_dp_metrics()
        finally:
            tc.close()
    return {"total_s": time.perf_counter() - t0, "train_s": t2 - t1}


def _audit_run(config, *, dataset_size: int, n_canaries: int, length: int, steps: int) -> dict[str, Any]:
    from tinker_nb.privacy_audit import audit_privacy

    t0 = time.perf_counter()
    r = audit_privacy(config, dataset_size=dataset_size, n_canaries=n_canaries, canary_length=length, steps=steps)
    return {"total_s": time.perf_counter() - t0, "train_s": r.seconds["train"], "epsilon_lower": r.epsilon_lower,
            "epsilon_reported": r.epsilon_reported}


def _figures(r) -> dict[str, Any]:
    return {"epsilon_lower": r.epsilon_lower, "epsilon_reported": r.epsilon_reported, "accountant": r.accountant,
            "confidence": r.confidence, "delta": r.delta, "guesses": r.guesses, "correct": r.correct,
            "k_pos": r.k_pos, "k_neg": r.k_neg, "ceiling": r.ceiling, "auc": r.auc,
            "tpr_at_1pct_fpr": r.tpr_at_fpr["0.01"]["tpr"], "steps": r.steps, "canaries": r.n_canaries,
            "dataset_size": r.dataset_size, "seconds": r.seconds}


def privacy_audit_section(*, full: bool = True, overhead_rounds: int | None = None,
                          overhead_steps: int | None = None) -> dict[str, Any]:
    from tinker_nb.privacy_audit import audit_privacy
    from tinker_nb.privacy_audit.presets import notebook_config, notebook_settings

    s = notebook_settings(fast=not full)
    runs = {}
    for name, dp in (("non_dp", False), ("dp_eps8", True)):
        r = audit_privacy(notebook_config(s, dp=dp), dataset_size=s["dataset_size"], n_canaries=s["n_canaries"],
                          canary_length=s["canary_length"], delta=s["delta"])
        runs[name] = _figures(r)
    # Overhead: interleaved plain / audit pairs of the DP configuration, same steps and data set size.
    rounds = overhead_rounds or (3 if full else 1)
    steps = overhead_steps or (60 if full else 10)
    cfg = notebook_config(s, dp=True)
    n_total = s["dataset_size"] + s["n_canaries"]  # the audit's data set: data + one slot per canary
    pairs = []
    for _ in range(rounds):
        plain = _plain_run(cfg, n_records=n_total, steps=steps)
        audit = _audit_run(cfg, dataset_size=s["dataset_size"], n_canaries=s["n_canaries"],
                           length=s["canary_length"], steps=steps)
        pairs.append({"plain": plain, "audit": audit, "ratio_total": audit["total_s"] / plain["total_s"],
                      "ratio_train": audit["train_s"] / plain["train_s"]})
    ratio = summary([p["ratio_total"] for p in pairs], kind="ratio")
    nd, dp = runs["non_dp"], runs["dp_eps8"]
    headline = [
        ("privacy audit / plain run of the same steps (wall, DP)", ratio, "<= 1.20"),
        ("privacy audit / plain run, training loop only", summary([p["ratio_train"] for p in pairs], kind="ratio"),
         None),
        ("notebook 05 non-DP: ε lower bound (95%)", _one(nd["epsilon_lower"], "ε"), None),
        ("notebook 05 non-DP: most the design can show", _one(nd["ceiling"], "ε"), None),
        ("notebook 05 DP ε=8: ε lower bound (95%)", _one(dp["epsilon_lower"], "ε"), None),
        ("notebook 05 DP ε=8: reported ε", _one(dp["epsilon_reported"], "ε"), None),
    ]
    return {"settings": {**s, "overhead_steps": steps, "overhead_rounds": rounds}, "runs": runs,
            "overhead": pairs, "ratio": ratio, "headline": headline}
