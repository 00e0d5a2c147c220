"""`make demo` runs `python -m tinker_nb.demo`: a short run end to end in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_demo_trains_reports_epsilon_saves_and_verifies(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TINKER_NB_KEY_DIR=str(tmp_path / "keys"))
    out = subprocess.run([sys.executable, "-m", "tinker_nb.demo", "--steps", "6", "--records", "400", "--batch", "16",
                          "--workspace", str(tmp_path / "ws")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert re.search(r"trained 6 DP steps", text)
    eps = float(re.search(r"privacy: ε = ([0-9.]+) \(PLD", text).group(1))
    assert 0 < eps <= 8.0
    assert "sampling=poisson" in text
    assert re.search(r"saved encrypted checkpoint [0-9a-f]+ \(AES-256-GCM", text), text
    assert re.search(r"audit ledger: \d+ entries, ok=True", text)
    assert "Traceback" not in out.stderr
