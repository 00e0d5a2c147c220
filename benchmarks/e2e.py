"""End-to-end: N steps of DP SFT, save, load, sample — against the same run without DP."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from .common import ratio, stats


def _run(model_dir: str, *, dp: bool, steps: int, batch: int, seq: int, workspace: str) -> dict[str, Any]:
    from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig
    from tinker_nb.engine.demo_data import demo_records

    service = ServiceClient(workspace, tenant="bench")
    records = demo_records(max(4 * batch, 200), seed=1)
    t0 = time.perf_counter()
    tc = service.create_training_client(TrainingConfig(
        model_ref=model_dir, lora_config=LoRAConfig(rank=8, alpha=16),
        dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_delta=1e-5) if dp else None,
        batch_size=batch))
    tc.attach_dataset(records)
    setup = time.perf_counter() - t0
    fb, opt = [], []
    for b in tc.poisson_batches(steps=steps):
        t = time.perf_counter()
        r = tc.forward_backward(b).result()
        fb.append(time.perf_counter() - t)
        if not dp and r.examples == 0:
            continue  # without DP an empty draw has nothing to step on (with DP it is a noise-only step)
        t = time.perf_counter()
        tc.optim_step().result()
        opt.append(time.perf_counter() - t)
    t = time.perf_counter()
    saved = tc.save_state("bench")
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    tc.load_state(saved.artifact_id)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    tc.sample(["The patient"], max_tokens=32, temperature=0)
    sample_s = time.perf_counter() - t
    eps = tc.get_dp_metrics().epsilon_spent if dp else None
    tc.close()
    return {"setup_s": setup, "forward_backward": stats(fb), "optim_step": stats(opt), "save_s": save_s,
            "load_s": load_s, "sample_s": sample_s, "total_s": time.perf_counter() - t0, "epsilon": eps}


def e2e_section(model_dir: str, *, steps: int, batch: int, seq: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as ws:
        nodp = _run(model_dir, dp=False, steps=steps, batch=batch, seq=seq, workspace=ws + "/a")
        dp = _run(model_dir, dp=True, steps=steps, batch=batch, seq=seq, workspace=ws + "/b")
    return {"settings": {"steps": steps, "batch": batch, "seq": seq}, "dp": dp, "nondp": nodp,
            "ratios": {"forward_backward_p50": ratio(dp["forward_backward"], nodp["forward_backward"]),
                       "optim_step_p50": ratio(dp["optim_step"], nodp["optim_step"]),
                       "total": dp["total_s"] / nodp["total_s"]}}
