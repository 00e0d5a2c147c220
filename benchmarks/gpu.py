"""`make bench-gpu`: DP-LoRA on a 0.5-1B Llama-architecture model in bf16 — tinker_nb DP vs non-DP vs opacus.

    python -m benchmarks.gpu            # CUDA: ~0.65 B Llama config, batch 16, seq 512, LoRA r=16, bf16 base
    python -m benchmarks.gpu --smoke    # any machine (CPU here): a tiny config in seconds (tests)

The model is built from a ``LlamaConfig`` with random weights (no downloads) and the embedded model's
tokenizer, saved once in bf16 under ``$TINKER_NB_BENCH_CACHE``. LoRA sits on every attention and MLP
projection. Base weights are bf16; LoRA parameters, per-example gradients, clipping, noise and AdamW
state are float32 (``engine/model.py``). Variants run interleaved in rotating order; ratios are
medians of per-round ratios with 95% bootstrap intervals; tokens/s = batch·seq / step time; peak
memory from ``torch.cuda.max_memory_allocated`` (CPU: torch's allocator via the profiler), each
variant in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .common import build_llama, interleaved, inverse, load_snapshot, machine, scaled, set_threads, under_load

VARIANTS = ("tinker_dp", "tinker_nondp", "opacus_ref")
PAIRS = (("tinker_dp", "tinker_nondp"), ("tinker_dp", "opacus_ref"))
# ~0.65 B parameters: 24 layers, hidden 1536, GQA 12 query / 4 key-value heads (head dim 128), SwiGLU 4096,
# vocabulary 32000 (untied). Sequences up to 2048 positions.
FULL_MODEL = dict(hidden=1536, layers=24, heads=12, kv_heads=4, intermediate=4096, vocab=32000, max_pos=2048)
SMOKE_MODEL = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1000, max_pos=128)


def _params(m: dict) -> int:
    h, i, L, v = m["hidden"], m["intermediate"], m["layers"], m["vocab"]
    kv = h * m["kv_heads"] // m["heads"]
    return L * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) + 2 * v * h + h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu")
    ap.add_argument("--smoke", action="store_true", help="tiny config, 2 rounds, any device (for tests)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--rank", type=int)
    ap.add_argument("--dtype", default="bfloat16", help="base-weight dtype (default bfloat16)")
    ap.add_argument("--time-cap", type=float, help="seconds of interleaved rounds at most")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TINKER_NB_BENCH_THREADS", "1")),
                    help="torch CPU threads (CPU runs only)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant memory probes")
    ap.add_argument("--out", default="reports/bench")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_start = load_snapshot()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("bench-gpu: no CUDA device here; run with --smoke for the CPU check of the harness.", file=sys.stderr)
        return 2
    threads = set_threads(args.threads) if not cuda else torch.get_num_threads()
    mcfg = SMOKE_MODEL if args.smoke else FULL_MODEL
    batch = args.batch or (2 if args.smoke else 16)
    seq = args.seq or (32 if args.smoke else 512)
    rank = args.rank or (4 if args.smoke else 16)
    rounds = (dict(min_rounds=2, max_rounds=2, time_cap_s=60) if args.smoke
              else dict(min_rounds=10, max_rounds=400, time_cap_s=args.time_cap or 150))
    from tinker_nb.engine.assets import resolve_model_ref

    cache = Path(os.environ.get("TINKER_NB_BENCH_CACHE", ".bench-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    name = "llama-smoke-bf16" if args.smoke else "llama-0.65b-bf16"
    t0 = time.perf_counter()
    model_dir = build_llama(cache / name, hidden=mcfg["hidden"], layers=mcfg["layers"], heads=mcfg["heads"],
                            kv_heads=mcfg["kv_heads"], intermediate=mcfg["intermediate"], vocab=mcfg["vocab"],
                            max_pos=mcfg["max_pos"], tokenizer_from=resolve_model_ref("tinker-nb/tiny-llama"),
                            dtype="bfloat16")
    build_s = time.perf_counter() - t0
    from .training import make_variant, memory_probe, phase_profile

    report: dict[str, Any] = {
        "schema": "tinker-nb/bench-gpu/v1", "mode": "smoke" if args.smoke else "full", "started": time.time(),
        "machine": machine(), "device": "cuda" if cuda else "cpu", "threads": threads,
        "model": {**mcfg, "parameters": _params(mcfg), "path": model_dir, "build_s": build_s},
        "settings": {"batch": batch, "seq": seq, "rank": rank, "base_dtype": args.dtype,
                     "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                     **rounds},
        "variants": {}, "ratios": {}, "errors": {}}
    fns = {v: make_variant(v, model_dir, batch=batch, seq=seq, rank=rank, dtype=args.dtype) for v in VARIANTS}
    t = interleaved({v: f for v, (f, _) in fns.items()}, PAIRS, **rounds)
    tokens = batch * seq
    for v in VARIANTS:
        report["variants"][v] = {"step_ms": scaled(t["step_seconds"][v], 1000, "ms"),
                                 "tokens_per_s": inverse(t["step_seconds"][v], tokens, "tokens/s")}
    report["ratios"] = {"dp_vs_nondp": t["ratios"]["tinker_dp/tinker_nondp"],
                        "dp_vs_opacus_ref": t["ratios"]["tinker_dp/opacus_ref"]}
    report["timing"] = {k: v for k, v in t.items() if k not in ("step_seconds", "ratios", "cpu_ratios")}
    report["phases_ms"] = phase_profile(fns["tinker_dp"][0], fns["tinker_nondp"][0], steps=2 if args.smoke else 10)
    report["trainable_parameters"] = sum(s.numel() for s in fns["tinker_dp"][0].acc.sums)
    for _, closer in fns.values():
        if closer is not None:
            closer.close()
    del fns
    if cuda:
        torch.cuda.empty_cache()
    if not args.no_memory:
        for v in VARIANTS:
            try:
                report["variants"][v]["peak_memory"] = memory_probe(v, model_dir, batch=batch, seq=seq, rank=rank,
                                                                    dtype=args.dtype)
            except Exception as exc:  # noqa: BLE001 - reported, never faked
                report["errors"][f"memory_{v}"] = str(exc)[-2000:]
        mem = {v: report["variants"][v].get("peak_memory") for v in VARIANTS}
        key = "absolute_peak_bytes" if cuda else "peak_bytes"
        for rk, a, b in (("memory_dp_vs_nondp", "tinker_dp", "tinker_nondp"),
                         ("memory_dp_vs_opacus_ref", "tinker_dp", "opacus_ref")):
            if mem[a] and mem[b]:
                report["ratios"][rk] = {"kind": "ratio", "unit": "", "n": 1, "paired": False, "exact": True,
                                        "what": "total peak allocated" if cuda else "peak allocated during the steps",
                                        "median": mem[a][key] / mem[b][key], "ci": None, "half_width": 0.0,
                                        "samples": []}
    load_end = load_snapshot()
    busy, why = under_load(load_start, load_end, cpu_count=os.cpu_count() or 1, threads=threads,
                           cpu_per_wall=None if cuda else t["cpu_per_wall"])
    report.update(finished=time.time(), load={"start": load_start, "end": load_end}, under_load=busy,
                  under_load_reasons=why)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu-smoke" if args.smoke else "gpu"
    text = json.dumps(report, indent=1, default=str)
    (out / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    (out / f"latest-{tag}.json").write_text(text)
    print(markdown(report))
    return 1 if report["errors"] else 0


def markdown(report: dict) -> str:
    from .sections import _ci, _fmt, status

    m = report["model"]
    s = report["settings"]
    dev = report["machine"].get("cuda") or f"CPU ({report['threads']} thread(s))"
    lines = [f"bench-gpu `{report['mode']}` on {dev}: Llama {m['parameters'] / 1e9:.2f} B ({m['layers']} layers, "
             f"hidden {m['hidden']}), base {s['base_dtype']}, LoRA r={s['rank']} on {len(s['targets'])} projections "
             f"({report.get('trainable_parameters', 0):,} trainable), batch {s['batch']} × seq {s['seq']}; "
             f"{report['timing']['rounds']} interleaved rounds (stopped by {report['timing']['stopped_by']})"
             + ("; UNDER LOAD: " + "; ".join(report["under_load_reasons"]) if report.get("under_load") else ""),
             "", "| figure | median | 95% CI | n | target | status |", "|---|---:|---|---:|---|---|"]
    targets = {"dp_vs_nondp": "<= 1.05", "memory_dp_vs_nondp": "<= 1.15", "dp_vs_opacus_ref": "<= 1.00"}
    for k, fig in report["ratios"].items():
        tgt = targets.get(k)
        lines.append(f"| {k.replace('_', ' ')} | {_fmt(fig['median'])} | {_ci(fig)} | {fig['n']} | {tgt or '-'} | "
                     f"{status(fig, tgt)} |")
    for v, d in report["variants"].items():
        for k in ("tokens_per_s", "step_ms"):
            fig = d[k]
            lines.append(f"| {v} {k.replace('_', ' ')} | {_fmt(fig['median'])} | {_ci(fig)} | {fig['n']} | - | |")
        pm = d.get("peak_memory")
        if pm:
            b = pm.get("absolute_peak_bytes", pm["peak_bytes"])
            lines.append(f"| {v} peak memory (GiB) | {b / 2**30:.3f} | exact | 1 | - | |")
    ph = report.get("phases_ms", {})
    if ph:
        lines += ["", "| phase (ms) | DP | non-DP |", "|---|---:|---:|"]
        for k in ph["dp"]:
            lines.append(f"| {k} | {_fmt(ph['dp'][k]['median'])} | {_fmt(ph['nondp'][k]['median'])} |")
    if report.get("errors"):
        lines.append(f"\nERRORS: {', '.join(report['errors'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
