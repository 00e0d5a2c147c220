"""`python -m benchmarks --quick|--full`: run every section, write reports/bench/<stamp>.json, print a table."""

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

from .common import build_llama, machine

QUICK = dict(train=dict(batch=8, seq=64, rank=8, rounds=16), scale_rounds=6,
             scale_grid={"batch": [4, 16], "seq": [32, 128], "rank": [4, 32], "model": ["embedded", "bigger"]},
             acct_steps=2000, acct_repeats=3, ckpt_sizes_mb=[1, 100], ledger_n=100_000, e2e_steps=10,
             dash_steps=30)
FULL = dict(train=dict(batch=16, seq=128, rank=16, rounds=20), scale_rounds=8,
            scale_grid={"batch": [4, 8, 32], "seq": [64, 256, 512], "rank": [4, 16, 64],
                        "model": ["embedded", "bigger"]},
            acct_steps=10_000, acct_repeats=5, ckpt_sizes_mb=[1, 100, 1000], ledger_n=100_000, e2e_steps=50,
            dash_steps=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="the `make bench` settings (default)")
    g.add_argument("--full", action="store_true", help="the `make bench-full` settings")
    g.add_argument("--smoke", action="store_true", help="smallest settings (used by the test suite)")
    ap.add_argument("--only", nargs="*", help="run only these sections")
    ap.add_argument("--out", default="reports/bench", help="report folder")
    ap.add_argument("--render", metavar="REPORT.json", help="print a saved report's headline as Markdown and exit")
    args = ap.parse_args(argv)
    if args.render:
        from . import sections

        print(sections.markdown(json.loads(Path(args.render).read_text())))
        return 0
    mode = "full" if args.full else "smoke" if args.smoke else "quick"
    cfg = dict(FULL if args.full else QUICK)
    if args.smoke:
        cfg.update(train=dict(batch=2, seq=16, rank=2, rounds=2), scale_rounds=1,
                   scale_grid={"batch": [2], "model": ["embedded"]}, acct_steps=20, acct_repeats=1,
                   ckpt_sizes_mb=[1], ledger_n=500, e2e_steps=2, dash_steps=3)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from tinker_nb.engine.assets import resolve_model_ref

    embedded = resolve_model_ref("tinker-nb/tiny-llama")
    cache = Path(os.environ.get("TINKER_NB_BENCH_CACHE", ".bench-cache"))
    cache.mkdir(exist_ok=True)
    cuda = torch.cuda.is_available()
    bigger = build_llama(cache / ("llama-0.5b" if cuda else "llama-h512-l8"),
                         hidden=1024 if cuda else 512, layers=24 if cuda else 8, heads=16 if cuda else 8,
                         vocab=32000 if cuda else 4096, max_pos=2048, tokenizer_from=embedded)
    models = {"embedded": embedded, "bigger": bigger}
    report: dict[str, Any] = {"schema": "tinker-nb/bench/v1", "mode": mode, "started": time.time(),
                              "machine": machine(), "settings": cfg, "models": models, "sections": {},
                              "errors": {}}
    from . import sections

    for name, fn in sections.SECTIONS.items():
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        try:
            report["sections"][name] = fn(cfg, models)
        except Exception as exc:  # noqa: BLE001 - a failing section is reported, never faked
            report["errors"][name] = "".join(traceback.format_exception(exc))[-4000:]
            print(f"[bench] {name} FAILED: {exc}", file=sys.stderr)
        print(f"[bench] {name} done in {time.perf_counter() - t:.1f}s", flush=True)
    report["finished"] = time.time()
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
