"""`python -m benchmarks --quick|--full|--smoke`: run every section, write reports/bench/<mode>-<stamp>.json.

Prints a table.

`--render REPORT.json` prints a saved report as Markdown; `--compare A.json B.json` says, figure by
figure, whether two reports' intervals overlap.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .common import build_llama, load_snapshot, machine, set_threads, under_load

# Rounds: interleaved rounds are added until every ratio's 95% interval is narrower than ±0.03, between
# min_rounds and max_rounds, and never past time_cap_s (the report says when the cap stopped it).
QUICK = dict(train=dict(batch=8, seq=64, rank=8),
             train_rounds=dict(min_rounds=12, max_rounds=300, time_cap_s=60),
             scale_rounds=dict(min_rounds=8, max_rounds=200, time_cap_s=8),
             scale_grid={"batch": [4, 16], "seq": [32, 128], "rank": [4, 32], "model": ["embedded", "bigger"]},
             noise_rounds=dict(min_rounds=12, max_rounds=300, time_cap_s=10),
             acct_steps=2000, acct_repeats=5, ckpt_sizes_mb=[1, 100], ckpt_repeats={1: 15, 100: 5},
             ledger_n=100_000, e2e_steps=20, dash_steps=12, phase_steps=8, op_profile=True)
FULL = dict(train=dict(batch=16, seq=128, rank=16),
            train_rounds=dict(min_rounds=16, max_rounds=500, time_cap_s=240),
            scale_rounds=dict(min_rounds=8, max_rounds=300, time_cap_s=30),
            scale_grid={"batch": [4, 8, 32], "seq": [64, 256, 512], "rank": [4, 16, 64],
                        "model": ["embedded", "bigger"]},
            noise_rounds=dict(min_rounds=16, max_rounds=500, time_cap_s=30),
            acct_steps=10_000, acct_repeats=5, ckpt_sizes_mb=[1, 100, 1000], ckpt_repeats={1: 25, 100: 7, 1000: 3},
            ledger_n=100_000, e2e_steps=50, dash_steps=50, phase_steps=16, op_profile=True, full=True)
SMOKE = dict(train=dict(batch=2, seq=16, rank=2),
             train_rounds=dict(min_rounds=2, max_rounds=2, time_cap_s=30),
             scale_rounds=dict(min_rounds=1, max_rounds=1, time_cap_s=30),
             scale_grid={"batch": [2], "model": ["embedded"]},
             noise_rounds=dict(min_rounds=2, max_rounds=2, time_cap_s=30),
             acct_steps=20, acct_repeats=1, ckpt_sizes_mb=[1], ckpt_repeats={1: 2}, ledger_n=500, e2e_steps=2,
             dash_steps=3, phase_steps=1, op_profile=False, noise_large_n=100_000, noise_large_repeats=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="the `make bench` settings (default)")
    g.add_argument("--full", action="store_true", help="the `make bench-full` settings")
    g.add_argument("--smoke", action="store_true", help="smallest settings (used by the test suite)")
    ap.add_argument("--only", nargs="*", help="run only these sections")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TINKER_NB_BENCH_THREADS", "1")),
                    help="torch intra-op threads for every variant (default 1: on a shared machine one thread "
                         "per process gives the steadiest ratios)")
    ap.add_argument("--profile", action="store_true",
                    help="add torch.profiler operator self-times of the DP and non-DP step (on in --quick/--full)")
    ap.add_argument("--out", default="reports/bench", help="report folder")
    ap.add_argument("--render", metavar="REPORT.json", help="print a saved report's headline as Markdown and exit")
    ap.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="do two reports' intervals overlap?")
    args = ap.parse_args(argv)
    if args.render or args.compare:
        from . import sections

        if args.render:
            rep = json.loads(Path(args.render).read_text())
            if rep.get("schema") != "tinker-nb/bench/v2":
                print(f"{args.render}: report schema {rep.get('schema')!r} predates intervals (v2); re-run the bench.")
                return 1
            print(sections.markdown(rep))
        else:
            a, b = (json.loads(Path(p).read_text()) for p in args.compare)
            print(sections.compare(a, b))
        return 0
    mode = "full" if args.full else "smoke" if args.smoke else "quick"
    cfg = dict(FULL if args.full else SMOKE if args.smoke else QUICK)
    if args.profile:
        cfg["op_profile"] = True
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_start = load_snapshot()
    import torch

    threads = set_threads(args.threads)
    from tinker_nb.engine.assets import resolve_model_ref

    embedded = resolve_model_ref("tinker-nb/tiny-llama")
    cache = Path(os.environ.get("TINKER_NB_BENCH_CACHE", ".bench-cache"))
    cache.mkdir(exist_ok=True)
    cuda = torch.cuda.is_available()
    bigger = build_llama(cache / ("llama-0.5b" if cuda else "llama-h512-l8"),
                         hidden=1024 if cuda else 512, layers=24 if cuda else 8, heads=16 if cuda else 8,
                         vocab=32000 if cuda else 4096, max_pos=2048, tokenizer_from=embedded)
    models = {"embedded": embedded, "bigger": bigger}
    report: dict[str, Any] = {"schema": "tinker-nb/bench/v2", "mode": mode, "started": time.time(),
                              "machine": machine(), "threads": threads, "settings": cfg, "models": models,
                              "sections": {}, "errors": {}, "section_seconds": {}}
    from . import sections

    for name, fn in sections.SECTIONS.items():
        if args.only and name not in args.only:
            continue
        if name in getattr(sections, "FULL_ONLY", ()) and mode != "full" and not args.only:
            continue
        t = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        try:
            report["sections"][name] = fn(cfg, models)
        except Exception as exc:  # noqa: BLE001 - a failing section is reported, never faked
            report["errors"][name] = "".join(traceback.format_exception(exc))[-4000:]
            print(f"[bench] {name} FAILED: {exc}", file=sys.stderr)
        report["section_seconds"][name] = time.perf_counter() - t
        print(f"[bench] {name} done in {time.perf_counter() - t:.1f}s", flush=True)
    report["finished"] = time.time()
    load_end = load_snapshot()
    cpu_share = [s["timing"]["cpu_per_wall"] for s in report["sections"].values()
                 if isinstance(s, dict) and "timing" in s]
    busy, why = under_load(load_start, load_end, cpu_count=os.cpu_count() or 1, threads=threads,
                           cpu_per_wall=min(cpu_share) if cpu_share else None)
    report.update(load={"start": load_start, "end": load_end}, under_load=busy, under_load_reasons=why)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"{mode}-{stamp}.json"
    text = json.dumps(report, indent=1, default=_default, allow_nan=True)
    path.write_text(text)
    (out / f"latest-{mode}.json").write_text(text)
    print(sections.table(report))
    print(f"report: {path}")
    return 1 if report["errors"] else 0


def _default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
