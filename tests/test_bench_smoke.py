"""The benchmark harness runs end to end on the smallest settings and writes a complete report.

No timing is asserted (machines are noisy): only that every figure was measured.
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


@pytest.mark.slow
def test_bench_smoke_report(tmp_path):
    env = dict(os.environ, TINKER_NB_BENCH_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rep = json.loads((tmp_path / "latest-smoke.json").read_text())
    assert rep["schema"] == "tinker-nb/bench/v1" and not rep["errors"]
    expected = {"training_step", "scaling", "accounting", "checkpoints", "ledger", "signing", "dashboard", "end_to_end"}
    assert set(rep["sections"]) == expected
    from benchmarks.sections import headline

    rows = headline(rep)
    assert len(rows) >= 20
    for name, value, _ in rows:
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, name
    tr = rep["sections"]["training_step"]
    assert set(tr["step_seconds"]) == {"tinker_dp", "tinker_nondp", "peft_torch", "opacus_ref"}
    assert all(len(v["samples"]) == 2 for v in tr["step_seconds"].values())
