"""Training-step cost: tinker_nb DP-LoRA vs tinker_nb non-DP vs plain peft+torch vs opacus make_private.

All four train the same LoRA model (same base weights, targets, rank, batch, sequence length and
seed) on the same fixed batch. Steps are interleaved (A B C D, B C D A, ...) so machine noise hits all
variants alike; we report medians and ratios. Peak memory is measured per variant in a fresh
subprocess (CUDA: max_memory_allocated; CPU: growth of the peak RSS during the timed steps).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from .common import ratio, stats, synthetic_batch

VARIANTS = ("tinker_dp", "tinker_nondp", "peft_torch", "opacus_ref")
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _lora_model(model_dir: str, rank: int, device):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    m.config.use_cache = False
    torch.manual_seed(0)
    return get_peft_model(m, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(TARGETS),
                                        lora_dropout=0.0, task_type="CAUSAL_LM"))


def make_variant(name: str, model_dir: str, *, batch: int, seq: int, rank: int):
    """Return (step_fn, session_or_None). step_fn runs one logical step on the fixed batch."""
    import torch

    from tinker_nb.config import DPConfig, LoRAConfig, TrainingConfig
    from tinker_nb.engine.loss import per_sequence_loss
    from tinker_nb.engine.session import TrainingSession

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vocab = None
    if name in ("tinker_dp", "tinker_nondp"):
        dp = DPConfig(noise_multiplier=1.0, max_grad_norm=1.0) if name == "tinker_dp" else None
        s = TrainingSession(TrainingConfig(model_ref=model_dir, lora_config=LoRAConfig(rank=rank, alpha=2 * rank),
                                           dp_config=dp, batch_size=batch, max_seq_len=seq), noise_seed=0)
        if dp is not None:
            s.attach_dataset([{"input_ids": [5, 6, 7]}] * (batch * 10))
        fixed = synthetic_batch(batch=batch, seq=seq, vocab=s.vocab_size)

        def step():
            s.forward_backward(fixed)
            s.optim_step()
        return step, s
    model = _lora_model(model_dir, rank, device)
    vocab = model.get_input_embeddings().num_embeddings
    fixed = {k: v.to(device) for k, v in synthetic_batch(batch=batch, seq=seq, vocab=vocab).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    if name == "peft_torch":
        def step():
            logits = model(input_ids=fixed["input_ids"], attention_mask=fixed["attention_mask"]).logits
            loss, _ = per_sequence_loss(logits, fixed["labels"])
            loss.mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step, None
    if name == "opacus_ref":
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        ds = TensorDataset(fixed["input_ids"].cpu())
        dl = DataLoader(ds, batch_size=batch)
        engine = PrivacyEngine(accountant="rdp")
        hooks, dp_opt, _ = engine.make_private(module=model, optimizer=opt, data_loader=dl, noise_multiplier=1.0,
                                               max_grad_norm=1.0, poisson_sampling=False, wrap_model=False,
                                               grad_sample_mode="hooks")

        def step():
            logits = model(input_ids=fixed["input_ids"], attention_mask=fixed["attention_mask"]).logits
            loss, _ = per_sequence_loss(logits, fixed["labels"])
            loss.mean().backward()
            dp_opt.step()
            dp_opt.zero_grad(set_to_none=True)
        return step, None
    raise ValueError(name)


def time_variants(model_dir: str, *, batch: int, seq: int, rank: int, rounds: int, warmup: int = 2,
                  variants=VARIANTS) -> dict[str, Any]:
    import time

    fns = {v: make_variant(v, model_dir, batch=batch, seq=seq, rank=rank) for v in variants}
    for v in variants:
        for _ in range(warmup):
            fns[v][0]()
    samples: dict[str, list[float]] = {v: [] for v in variants}
    order = list(variants)
    for r in range(rounds):
        rot = order[r % len(order):] + order[: r % len(order)]
        for v in rot:
            t = time.perf_counter()
            fns[v][0]()
            samples[v].append(time.perf_counter() - t)
    out = {v: stats(samples[v]) for v in variants}
    sess = fns.get("tinker_dp", (None, None))[1]
    if sess is not None:
        n = warmup + rounds
        out["tinker_dp_phases_ms"] = {k: 1000 * t / n for k, t in sess.timings.items()}
    for v, (_, s) in fns.items():
        if s is not None:
            s.close()
    return out


def memory_probe(variant: str, model_dir: str, *, batch: int, seq: int, rank: int, steps: int = 3) -> dict:
    """Peak memory of `steps` training steps of one variant, measured in a fresh subprocess.

    CUDA: ``max_memory_allocated`` minus the allocation before training. CPU: the peak of the resident
    set size sampled every millisecond by a thread, minus the RSS right before the first step (model,
    optimizer and hooks loaded), i.e. the memory the training steps themselves need.
    """
    code = (
        "import json,os,threading,time,torch\n"
        "from benchmarks.training import make_variant\n"
        f"fn,s=make_variant({variant!r},{model_dir!r},batch={batch},seq={seq},rank={rank})\n"
        "cuda=torch.cuda.is_available()\n"
        "page=os.sysconf('SC_PAGE_SIZE')\n"
        "rss=lambda: int(open('/proc/self/statm').read().split()[1])*page\n"
        "peak=[0]; stop=[False]\n"
        "def watch():\n"
        "    while not stop[0]:\n"
        "        peak[0]=max(peak[0],rss()); time.sleep(0.001)\n"
        "base=torch.cuda.memory_allocated() if cuda else rss()\n"
        "if cuda: torch.cuda.reset_peak_memory_stats()\n"
        "th=threading.Thread(target=watch); th.start()\n"
        f"[fn() for _ in range({steps})]\n"
        "stop[0]=True; th.join()\n"
        "top=torch.cuda.max_memory_allocated() if cuda else max(peak[0],rss())\n"
        "print(json.dumps({'peak_bytes':top-base,'baseline_bytes':base,"
        "'kind':'cuda_allocated_delta' if cuda else 'cpu_rss_delta'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe {variant} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def training_step_section(model_dir: str, *, batch: int, seq: int, rank: int, rounds: int,
                          memory: bool = True) -> dict[str, Any]:
    t = time_variants(model_dir, batch=batch, seq=seq, rank=rank, rounds=rounds)
    res: dict[str, Any] = {"settings": {"batch": batch, "seq": seq, "rank": rank, "rounds": rounds,
                                        "targets": list(TARGETS)},
                           "step_seconds": {v: t[v] for v in VARIANTS},
                           "dp_phases_ms": t["tinker_dp_phases_ms"]}
    res["ratios"] = {
        "dp_vs_nondp": ratio(t["tinker_dp"], t["tinker_nondp"]),
        "dp_vs_peft_torch": ratio(t["tinker_dp"], t["peft_torch"]),
        "dp_vs_opacus_ref": ratio(t["tinker_dp"], t["opacus_ref"]),
        "nondp_vs_peft_torch": ratio(t["tinker_nondp"], t["peft_torch"]),
    }
    if memory:
        mem = {v: memory_probe(v, model_dir, batch=batch, seq=seq, rank=rank) for v in VARIANTS}
        res["peak_memory"] = mem
        res["ratios"]["memory_dp_vs_nondp"] = mem["tinker_dp"]["peak_bytes"] / mem["tinker_nondp"]["peak_bytes"]
        res["ratios"]["memory_dp_vs_opacus_ref"] = mem["tinker_dp"]["peak_bytes"] / mem["opacus_ref"]["peak_bytes"]
    return res


def _max_positions(model_dir: str) -> int:
    import json
    from pathlib import Path

    return int(json.loads((Path(model_dir) / "config.json").read_text())["max_position_embeddings"])


def scaling_section(model_dirs: dict[str, str], *, base: dict, grid: dict[str, list], rounds: int) -> list[dict]:
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
            t = time_variants(model, batch=kw["batch"], seq=kw["seq"], rank=kw["rank"], rounds=rounds,
                              variants=("tinker_dp", "tinker_nondp"))
            rows.append({"knob": knob, "value": val, "model": name,
                         **{k: kw[k] for k in ("batch", "seq", "rank")},
                         "dp_median_s": t["tinker_dp"]["median"], "nondp_median_s": t["tinker_nondp"]["median"],
                         "ratio": ratio(t["tinker_dp"], t["tinker_nondp"])})
    return rows
