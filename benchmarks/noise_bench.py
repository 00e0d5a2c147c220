"""Cost of the secret Gaussian noise: AES-CTR keystream + Box-Muller (engine/noise.py) vs torch.normal.

One DP step draws noise for every trainable parameter once. Per round we time the secure draw, a
``torch.normal`` draw of the same size and a whole DP step on the embedded model, interleaved, and
keep the per-round ratios: secure / torch.normal, and each draw as a fraction of that round's DP step.
"""

from __future__ import annotations

from typing import Any

from .common import interleaved, scaled


def gpu_adapter_parameters(rank: int = 16) -> int:
    from .gpu import FULL_MODEL as m

    kv = m["hidden"] * m["kv_heads"] // m["heads"]
    h, i = m["hidden"], m["intermediate"]
    per_layer = rank * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)
    return per_layer * m["layers"]


def large_draw(secure: Any, gen: Any, dev: Any, *, n: int, repeats: int) -> dict[str, Any]:
    import torch

    from .common import summary, timed

    ts, tt = [], []
    for _ in range(repeats):
        ts.append(timed(lambda: secure.normal((n,), 1.0, device=dev))[0])
        tt.append(timed(lambda: torch.normal(0.0, 1.0, size=(n,), generator=gen, device=dev))[0])
    return {"parameters": n, "secure_ms": scaled(summary(ts, kind="absolute", unit="s"), 1000, "ms"),
            "torch_normal_ms": scaled(summary(tt, kind="absolute", unit="s"), 1000, "ms"),
            "secure_vs_torch_normal": summary([a / b for a, b in zip(ts, tt)], kind="ratio")}


def noise_section(model_dir: str, *, batch: int, seq: int, rank: int, min_rounds: int, max_rounds: int,
                  time_cap_s: float, large_n: int | None = None, large_repeats: int = 3) -> dict[str, Any]:
    try:
        from tinker_nb.engine.noise import GaussianNoise
    except ImportError:
        return {"skipped": "tinker_nb.engine.noise is not present"}
    import torch

    from .training import EngineStep

    step = EngineStep(model_dir, dp=True, batch=batch, seq=seq, rank=rank)
    n = sum(s.numel() for s in step.acc.sums)
    dev = step.dev
    secure = GaussianNoise.secure()
    gen = torch.Generator(device=dev).manual_seed(0)
    fns = {
        "secure_noise": lambda: secure.normal((n,), 1.0, device=dev),
        "torch_normal": lambda: torch.normal(0.0, 1.0, size=(n,), generator=gen, device=dev),
        "dp_step": step,
    }
    t = interleaved(fns, [("secure_noise", "torch_normal"), ("secure_noise", "dp_step"),
                          ("torch_normal", "dp_step")], min_rounds=min_rounds, max_rounds=max_rounds,
                    time_cap_s=time_cap_s)
    step.close()
    r = t["ratios"]
    # The bench-gpu adapter (LoRA r=16 on all 7 projections of the ~0.7 B config: 10.4 M parameters) —
    # a size where drawing the noise is no longer small next to a step.
    big = large_draw(secure, gen, dev, n=large_n, repeats=large_repeats) if large_n else None
    return {"settings": {"parameters": n, "batch": batch, "seq": seq, "rank": rank, "device": str(dev)},
            "large": big,
            "timing": {k: v for k, v in t.items() if k not in ("step_seconds", "ratios", "cpu_ratios")},
            "ms": {k: scaled(v, 1000, "ms") for k, v in t["step_seconds"].items()},
            "ratios": {"secure_vs_torch_normal": r["secure_noise/torch_normal"],
                       "secure_fraction_of_dp_step": r["secure_noise/dp_step"],
                       "torch_normal_fraction_of_dp_step": r["torch_normal/dp_step"]}}
