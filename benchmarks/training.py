"""Training-step cost: tinker_nb DP-LoRA vs tinker_nb non-DP vs plain peft+torch vs opacus make_private.

All four train the same LoRA model (same base weights, targets, rank, batch, sequence length and
seed) on the same fixed batch. The tinker_nb variants are the engine's step — the calls
``TrainingSession.forward_backward`` / ``optim_step`` make (per-sequence loss, backward, per-example
clip + accumulate, noise from the engine's noise source, AdamW) without the session's audit/event
bookkeeping, which is the same with and without DP. Steps are interleaved in rotating order; each
ratio is the median of per-round ratios with a 95% bootstrap interval, and rounds are added until the
interval is narrower than ±0.03 or the time cap is reached. Peak memory comes from the allocator
(CUDA ``max_memory_allocated``; CPU: torch's allocator as seen by the profiler), per variant in a
fresh process.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from typing import Any

from .common import interleaved, scaled, summary, synthetic_batch

VARIANTS = ("tinker_dp", "tinker_nondp", "peft_torch", "opacus_ref")
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PAIRS = (("tinker_dp", "tinker_nondp"), ("tinker_dp", "peft_torch"), ("tinker_dp", "opacus_ref"),
         ("tinker_nondp", "peft_torch"))


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def noise_kwargs(acc: Any, dev) -> dict[str, Any]:
    """Keyword arguments for ``GradientAccumulator.write_grads`` giving it the engine's noise source.

    The engine's own source when it takes one (``noise=``: the secure AES-CTR Gaussian of
    ``engine/noise.py``), else a torch generator (the earlier signature).
    """
    params = inspect.signature(acc.write_grads).parameters
    if "noise" in params:
        from tinker_nb.engine.noise import GaussianNoise

        return {"noise": GaussianNoise.secure()}
    import torch

    return {"generator": torch.Generator(device=dev).manual_seed(0)}


def _lora_model(model_dir: str, rank: int, dev, dtype=None):
    import torch
    from peft import LoraConfig, get_peft_model

    from tinker_nb.engine.model import load_base_model

    m = load_base_model(model_dir, device=dev, dtype=dtype).model
    torch.manual_seed(0)
    model = get_peft_model(m, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(TARGETS),
                                         lora_dropout=0.0, task_type="CAUSAL_LM"))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model


class EngineStep:
    """One tinker_nb logical step on a fixed batch, with optional per-phase timing."""

    def __init__(self, model_dir: str, *, dp: bool, batch: int, seq: int, rank: int, dtype=None) -> None:
        import torch

        from tinker_nb.config import LoRAConfig
        from tinker_nb.engine.dp import GradientAccumulator
        from tinker_nb.engine.model import add_lora, load_base_model

        self.dev = device()
        loaded = load_base_model(model_dir, device=self.dev, dtype=dtype)
        self.model = add_lora(loaded.model, LoRAConfig(rank=rank, alpha=2 * rank, target_modules=TARGETS), seed=0)
        self.model.train()
        self.dp = dp
        self.acc = GradientAccumulator(self.model, dp=dp, max_grad_norm=1.0 if dp else None)
        self.opt = torch.optim.AdamW(self.acc.params, lr=1e-3)
        self.noise = noise_kwargs(self.acc, self.dev) if dp else {}
        self.batch = {k: v.to(self.dev) for k, v in
                      synthetic_batch(batch=batch, seq=seq, vocab=loaded.vocab_size).items()}
        self.size = batch
        self.phases: dict[str, list[float]] = {}

    def __call__(self, phases: bool = False) -> None:
        from tinker_nb.engine.loss import per_sequence_loss

        from .common import _sync

        marks = [time.perf_counter()]

        def mark():
            if phases:
                _sync()
                marks.append(time.perf_counter())

        b = self.batch
        logits = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        loss, _ = per_sequence_loss(logits, b["labels"])
        mark()
        loss.sum().backward()
        mark()
        self.acc.absorb(self.size)
        mark()
        self.acc.write_grads(noise_std=1.0 if self.dp else 0.0, normaliser=float(self.size), **self.noise)
        mark()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.acc.reset()
        mark()
        if phases:
            for name, a, z in zip(("forward", "backward", "clip_accumulate", "noise", "optimizer"), marks, marks[1:]):
                self.phases.setdefault(name, []).append(z - a)

    def close(self) -> None:
        self.acc.close()


def make_variant(name: str, model_dir: str, *, batch: int, seq: int, rank: int, dtype=None):
    """Return (step_fn, closer). step_fn runs one logical step on the fixed batch."""
    import torch

    from tinker_nb.engine.loss import per_sequence_loss

    if name in ("tinker_dp", "tinker_nondp"):
        s = EngineStep(model_dir, dp=name == "tinker_dp", batch=batch, seq=seq, rank=rank, dtype=dtype)
        return s, s
    dev = device()
    model = _lora_model(model_dir, rank, dev, dtype)
    vocab = model.get_input_embeddings().num_embeddings
    fixed = {k: v.to(dev) for k, v in synthetic_batch(batch=batch, seq=seq, vocab=vocab).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    if name == "peft_torch":
        def step():
            logits = model(input_ids=fixed["input_ids"], attention_mask=fixed["attention_mask"]).logits
            loss, _ = per_sequence_loss(logits, fixed["labels"])
            loss.sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step, None
    if name == "opacus_ref":
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        dl = DataLoader(TensorDataset(fixed["input_ids"].cpu()), batch_size=batch)
        engine = PrivacyEngine(accountant="rdp")
        _hooks, dp_opt, _ = engine.make_private(module=model, optimizer=opt, data_loader=dl, noise_multiplier=1.0,
                                                max_grad_norm=1.0, poisson_sampling=False, wrap_model=False,
                                                grad_sample_mode="hooks", loss_reduction="sum")

        def step():
            logits = model(input_ids=fixed["input_ids"], attention_mask=fixed["attention_mask"]).logits
            loss, _ = per_sequence_loss(logits, fixed["labels"])
            loss.sum().backward()
            dp_opt.step()
            dp_opt.zero_grad(set_to_none=True)
        return step, None
    raise ValueError(name)


def phase_profile(dp_step: EngineStep, nondp_step: EngineStep, *, steps: int) -> dict[str, Any]:
    """Per-phase milliseconds of the DP and non-DP step (device synchronised between phases)."""
    for s in (dp_step, nondp_step):
        s.phases = {}
    for _ in range(steps):
        dp_step(phases=True)
        nondp_step(phases=True)
    out = {}
    for tag, s in (("dp", dp_step), ("nondp", nondp_step)):
        out[tag] = {k: scaled(summary(v, kind="absolute", unit="s"), 1000, "ms") for k, v in s.phases.items()}
    return out


def op_profile(dp_step: EngineStep, nondp_step: EngineStep, *, steps: int = 8, top: int = 15) -> dict[str, Any]:
    """torch.profiler self CPU time per operator (ms per step) for the DP and non-DP step, largest differences first.

    One profiled step at a time, DP and non-DP alternating; per operator the median over the steps, so
    a burst of load on the machine moves both sides alike.
    """
    import statistics

    from torch.profiler import ProfilerActivity, profile

    per: dict[str, list[dict[str, float]]] = {"dp": [], "nondp": []}
    for i in range(steps):
        for tag, s in ((("dp", dp_step), ("nondp", nondp_step)) if i % 2 == 0 else
                       (("nondp", nondp_step), ("dp", dp_step))):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                s()
            per[tag].append({e.key: e.self_cpu_time_total / 1000 for e in prof.key_averages()})
    med = {tag: {k: statistics.median(d.get(k, 0.0) for d in runs) for k in set().union(*runs)}
           for tag, runs in per.items()}
    keys = set(med["dp"]) | set(med["nondp"])
    rows = sorted(((k, med["dp"].get(k, 0.0), med["nondp"].get(k, 0.0)) for k in keys),
                  key=lambda r: -abs(r[1] - r[2]))[:top]
    return {"unit": "ms of self CPU time per step, median of steps (profiler overhead included)",
            "steps": steps, "total_dp": sum(med["dp"].values()), "total_nondp": sum(med["nondp"].values()),
            "largest_differences": [{"op": k, "dp": a, "nondp": b, "diff": a - b} for k, a, b in rows]}


def memory_probe(variant: str, model_dir: str, *, batch: int, seq: int, rank: int, steps: int = 3,
                 dtype: str | None = None) -> dict:
    """Peak allocator bytes of the first ``steps`` steps of one variant (built in a fresh process).

    Counted from just before the first step, so optimizer state, per-example buffers and activations
    are in; the loaded base model is not (CUDA reports it as ``baseline_bytes``).
    """
    code = (
        "import json,os,torch\n"
        "torch.set_num_threads(int(os.environ.get('TINKER_NB_BENCH_THREADS','1')))\n"
        "from benchmarks.training import make_variant\n"
        "from benchmarks.common import peak_allocated_bytes\n"
        f"fn,_=make_variant({variant!r},{model_dir!r},batch={batch},seq={seq},rank={rank},dtype={dtype!r})\n"
        f"r=peak_allocated_bytes(lambda: [fn() for _ in range({steps})])\n"
        "print(json.dumps(r))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe {variant} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def training_step_section(model_dir: str, *, batch: int, seq: int, rank: int, min_rounds: int, max_rounds: int,
                          time_cap_s: float, memory: bool = True, ops: bool = False, phase_steps: int = 8,
                          dtype: str | None = None) -> dict[str, Any]:
    fns = {v: make_variant(v, model_dir, batch=batch, seq=seq, rank=rank, dtype=dtype) for v in VARIANTS}
    t = interleaved({v: f for v, (f, _) in fns.items()}, PAIRS, min_rounds=min_rounds, max_rounds=max_rounds,
                    time_cap_s=time_cap_s)
    res: dict[str, Any] = {"settings": {"batch": batch, "seq": seq, "rank": rank, "targets": list(TARGETS),
                                        "device": str(device()), "base_dtype": dtype or "float32"},
                           "timing": {k: v for k, v in t.items() if k not in ("step_seconds", "ratios", "cpu_ratios")},
                           "step_ms": {v: scaled(s, 1000, "ms") for v, s in t["step_seconds"].items()},
                           "ratios": {"dp_vs_nondp": t["ratios"]["tinker_dp/tinker_nondp"],
                                      "dp_vs_peft_torch": t["ratios"]["tinker_dp/peft_torch"],
                                      "dp_vs_opacus_ref": t["ratios"]["tinker_dp/opacus_ref"],
                                      "nondp_vs_peft_torch": t["ratios"]["tinker_nondp/peft_torch"]},
                           "cpu_time_ratios": {"dp_vs_nondp": t["cpu_ratios"]["tinker_dp/tinker_nondp"],
                                               "dp_vs_opacus_ref": t["cpu_ratios"]["tinker_dp/opacus_ref"]}}
    dp_step, nondp_step = fns["tinker_dp"][0], fns["tinker_nondp"][0]
    res["phases_ms"] = phase_profile(dp_step, nondp_step, steps=phase_steps)
    if ops:
        res["op_profile"] = op_profile(dp_step, nondp_step)
    for _, closer in fns.values():
        if closer is not None:
            closer.close()
    del fns
    if memory:
        mem = {v: memory_probe(v, model_dir, batch=batch, seq=seq, rank=rank, dtype=dtype) for v in VARIANTS}
        res["peak_memory"] = mem
        for key, a, b in (("memory_dp_vs_nondp", "tinker_dp", "tinker_nondp"),
                          ("memory_dp_vs_opacus_ref", "tinker_dp", "opacus_ref")):
            # one allocator count per variant (deterministic for a given build): an exact ratio, no interval
            res["ratios"][key] = {"kind": "ratio", "unit": "", "n": 1, "paired": False, "exact": True,
                                  "median": mem[a]["peak_bytes"] / mem[b]["peak_bytes"], "ci": None,
                                  "half_width": 0.0, "samples": []}
    return res


def _max_positions(model_dir: str) -> int:
    from pathlib import Path

    return int(json.loads((Path(model_dir) / "config.json").read_text())["max_position_embeddings"])


def scaling_section(model_dirs: dict[str, str], *, base: dict, grid: dict[str, list], min_rounds: int,
                    max_rounds: int, time_cap_s: float) -> list[dict]:
    """How the DP/non-DP ratio moves with batch, sequence length, model size and LoRA rank."""
    rows = []
    for knob, values in grid.items():
        for val in values:
            kw = dict(base)
            name = "embedded"
            if knob == "model":
                name = val
            else:
                kw[knob] = val
            if kw["seq"] > _max_positions(model_dirs[name]):
                name = "bigger"  # sequences longer than the embedded model's positions run on the bigger config
            model = model_dirs[name]
            fns = {v: make_variant(v, model, batch=kw["batch"], seq=kw["seq"], rank=kw["rank"])
                   for v in ("tinker_dp", "tinker_nondp")}
            # a bigger-model step costs ~6x an embedded one: give its rows the rounds to narrow the interval
            cap = time_cap_s * (5 if name == "bigger" else 1)
            t = interleaved({v: f for v, (f, _) in fns.items()}, [("tinker_dp", "tinker_nondp")],
                            min_rounds=min_rounds, max_rounds=max_rounds, time_cap_s=cap)
            for _, closer in fns.values():
                closer.close()
            rows.append({"knob": knob, "value": val, "model": name, **{k: kw[k] for k in ("batch", "seq", "rank")},
                         "dp_ms": scaled(t["step_seconds"]["tinker_dp"], 1000, "ms"),
                         "nondp_ms": scaled(t["step_seconds"]["tinker_nondp"], 1000, "ms"),
                         "ratio": t["ratios"]["tinker_dp/tinker_nondp"],
                         "cpu_time_ratio": t["cpu_ratios"]["tinker_dp/tinker_nondp"],
                         "timing": {k: v for k, v in t.items() if k not in ("step_seconds", "ratios", "cpu_ratios")}})
    return rows
