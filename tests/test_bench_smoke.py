"""The benchmark harness runs end to end on the smallest settings and writes a complete report.

No timing is asserted (machines are noisy): only that every figure was measured, with its interval
and kind, and that the report records threads and machine load.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args, tmp_path, timeout=900):
    env = dict(os.environ, TINKER_NB_BENCH_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_bench_smoke_report(tmp_path):
    out = _run(["-m", "benchmarks", "--smoke", "--out", str(tmp_path)], tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rep = json.loads((tmp_path / "latest-smoke.json").read_text())
    assert rep["schema"] == "tinker-nb/bench/v2" and not rep["errors"]
    expected = {"training_step", "scaling", "noise", "accounting", "checkpoints", "ledger", "signing", "dashboard",
                "end_to_end"}
    assert expected <= set(rep["sections"])
    assert rep["threads"] == 1 and isinstance(rep["under_load"], bool)
    assert rep["load"]["start"]["loadavg"] and rep["load"]["end"]["loadavg"]
    from benchmarks.sections import compare, headline, markdown

    rows = headline(rep)
    assert len(rows) >= 25
    for name, fig, _ in rows:
        v = fig["median"]
        # >= 0: a smoke-sized dashboard run may send no message at all
        assert isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, name
        assert v > 0 or "per second" in name, name
        assert fig["kind"] in ("ratio", "absolute") and fig["n"] >= 1, name
    tr = rep["sections"]["training_step"]
    assert set(tr["step_ms"]) == {"tinker_dp", "tinker_nondp", "peft_torch", "opacus_ref"}
    assert all(len(v["samples"]) == 2 for v in tr["step_ms"].values())
    dp = tr["ratios"]["dp_vs_nondp"]
    assert dp["paired"] and len(dp["samples"]) == 2 and dp["ci"][0] <= dp["median"] <= dp["ci"][1]
    assert tr["timing"]["stopped_by"] in ("interval", "max_rounds", "time_cap")
    mem = tr["peak_memory"]
    assert all(m["peak_bytes"] > 0 for m in mem.values())
    assert set(tr["phases_ms"]["dp"]) == {"forward", "backward", "clip_accumulate", "noise", "optimizer"}
    assert "95% CI" in markdown(rep) and "| DP / non-DP step time |" in compare(rep, rep)


@pytest.mark.slow
def test_bench_gpu_smoke(tmp_path):
    """`make bench-gpu`'s harness on CPU with a tiny Llama config: DP vs non-DP vs opacus, tokens/s, memory."""
    out = _run(["-m", "benchmarks.gpu", "--smoke", "--out", str(tmp_path)], tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rep = json.loads((tmp_path / "latest-gpu-smoke.json").read_text())
    assert rep["schema"] == "tinker-nb/bench-gpu/v1" and not rep.get("errors")
    assert rep["settings"]["base_dtype"] == "bfloat16" and rep["device"] == "cpu"
    assert set(rep["variants"]) == {"tinker_dp", "tinker_nondp", "opacus_ref"}
    for v in rep["variants"].values():
        assert v["tokens_per_s"]["median"] > 0 and v["peak_memory"]["peak_bytes"] > 0
    for k in ("dp_vs_nondp", "dp_vs_opacus_ref"):
        assert math.isfinite(rep["ratios"][k]["median"])
    assert math.isfinite(rep["ratios"]["memory_dp_vs_nondp"]["median"])
