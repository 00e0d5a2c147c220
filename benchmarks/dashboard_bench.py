"""Training-loop time with the live dashboard attached vs detached (interleaved blocks), and its message rate."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from .common import scaled, summary


def dashboard_section(model_dir: str, *, steps: int, blocks: int = 4) -> dict[str, Any]:
    from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig
    from tinker_nb.engine.demo_data import demo_records
    from tinker_nb.notebook.dashboard import Dashboard

    with tempfile.TemporaryDirectory() as ws:
        svc = ServiceClient(ws, passphrase="bench")
        tc = svc.create_training_client(TrainingConfig(
            model_ref=model_dir, lora_config=LoRAConfig(rank=8, alpha=16),
            dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_delta=1e-5),
            batch_size=16, max_seq_len=64))
        tc.attach_dataset(demo_records(400, seed=2))
        it = tc.poisson_batches(steps=steps * blocks * 2 + 5)
        for _ in range(3):
            tc.forward_backward(next(it))
            tc.optim_step()
        tc.get_dp_metrics()
        on, off, msgs, secs = [], [], 0, 0.0
        for blk in range(blocks * 2):
            attached = blk % 2 == 0
            d = Dashboard.for_client(tc) if attached else None
            sent0 = d.messages_sent if d else 0
            t = time.perf_counter()
            for _ in range(steps):
                tc.forward_backward(next(it))
                tc.optim_step()
            tc.session  # noqa: B018
            tc.metrics_history()  # drain the queue
            dt = time.perf_counter() - t
            if d:
                msgs += d.messages_sent - sent0
                secs += dt
                d.detach()
                on.append(dt / steps)
            else:
                off.append(dt / steps)
        tc.close()
    # blocks alternate attached / detached: block pair k gives one ratio
    ratio = summary([a / b for a, b in zip(on, off)], kind="ratio")
    rate = msgs / secs if secs else 0.0
    return {"steps_per_block": steps, "blocks": blocks,
            "attached_step_ms": scaled(summary(on, kind="absolute", unit="s"), 1000, "ms"),
            "detached_step_ms": scaled(summary(off, kind="absolute", unit="s"), 1000, "ms"),
            "ratio": ratio, "messages_per_s": rate,
            "headline": [("dashboard attached / detached loop time", ratio, "<= 1.01"),
                         ("dashboard messages per second", summary([rate], kind="absolute", unit="1/s"), "<= 10")]}
