"""End-to-end through the public client: N DP steps, save, load, sample — against the same run without DP.

The two clients step in turn (non-DP step k, DP step k, ...) so that machine noise hits both alike.
Their Poisson draws differ in size, so a step of one is no pair for a step of the other: the
forward_backward and optim_step figures are ratios of medians with intervals from resampling each
side independently (``paired: false``).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from .common import ratio_of_medians, scaled, summary


def _client(model_dir: str, *, dp: bool, batch: int, seq: int, workspace: str):
    from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig
    from tinker_nb.engine.demo_data import demo_records

    service = ServiceClient(workspace)  # default tenant, as TrainingConfig.tenant
    t0 = time.perf_counter()
    tc = service.create_training_client(TrainingConfig(
        model_ref=model_dir, lora_config=LoRAConfig(rank=8, alpha=16),
        dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_delta=1e-5) if dp else None,
        batch_size=batch, max_seq_len=seq))
    tc.attach_dataset(demo_records(max(4 * batch, 200), seed=1))
    return tc, time.perf_counter() - t0


def _finish(tc, *, dp: bool, seq: int) -> dict[str, Any]:
    t = time.perf_counter()
    saved = tc.save_state("bench")
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    tc.load_state(saved.artifact_id)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    tc.sample(["The patient"], max_tokens=max(1, min(32, seq - 8)), temperature=0)  # prompt + tokens <= max_seq_len
    sample_s = time.perf_counter() - t
    eps = tc.get_dp_metrics().epsilon_spent if dp else None
    tc.close()
    return {"save_s": save_s, "load_s": load_s, "sample_s": sample_s, "epsilon": eps}


def e2e_section(model_dir: str, *, steps: int, batch: int, seq: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as ws:
        clients = {tag: _client(model_dir, dp=tag == "dp", batch=batch, seq=seq, workspace=f"{ws}/{tag}")
                   for tag in ("nondp", "dp")}
        its = {tag: iter(tc.poisson_batches(steps=steps)) for tag, (tc, _) in clients.items()}
        fb: dict[str, list[float]] = {"dp": [], "nondp": []}
        opt: dict[str, list[float]] = {"dp": [], "nondp": []}
        loop: dict[str, float] = {"dp": 0.0, "nondp": 0.0}
        for k in range(steps):
            for tag in (("nondp", "dp") if k % 2 == 0 else ("dp", "nondp")):
                tc = clients[tag][0]
                t0 = t = time.perf_counter()
                r = tc.forward_backward(next(its[tag])).result()
                fb[tag].append(time.perf_counter() - t)
                if tag == "dp" or r.examples > 0:  # without DP an empty draw has nothing to step on
                    t = time.perf_counter()
                    tc.optim_step().result()
                    opt[tag].append(time.perf_counter() - t)
                loop[tag] += time.perf_counter() - t0
        out: dict[str, Any] = {"settings": {"steps": steps, "batch": batch, "seq": seq}}
        for tag, (tc, setup) in clients.items():
            out[tag] = {"setup_s": setup, "loop_s": loop[tag],
                        "forward_backward_ms": scaled(summary(fb[tag], kind="absolute", unit="s"), 1000, "ms"),
                        "optim_step_ms": scaled(summary(opt[tag], kind="absolute", unit="s"), 1000, "ms"),
                        **_finish(tc, dp=tag == "dp", seq=seq)}
    out["ratios"] = {"forward_backward_p50": ratio_of_medians(fb["dp"], fb["nondp"]),
                     "optim_step_p50": ratio_of_medians(opt["dp"], opt["nondp"]),
                     "training_loop_total": {"kind": "ratio", "unit": "", "paired": False, "n": 1,
                                             "median": loop["dp"] / loop["nondp"], "ci": None,
                                             "half_width": float("nan"), "samples": []}}
    out["headline"] = [("E2E forward_backward p50 DP / non-DP", out["ratios"]["forward_backward_p50"], None),
                       ("E2E optim_step p50 DP / non-DP", out["ratios"]["optim_step_p50"], None),
                       ("E2E training loop DP / non-DP (one run each)", out["ratios"]["training_loop_total"], None)]
    return out
