"""`make demo` runs `python -m tinker_nb.demo`: a short run end to end in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_demo_trains_reports_epsilon_saves_and_verifies(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TINKER_NB_KEY_DIR=str(tmp_path / "keys"))
    out = subprocess.run([sys.executable, "-m", "tinker_nb.demo", "--steps", "6", "--records", "400", "--batch", "16", "--heldout", "20",
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
    m = re.search(r"held-out loss per token on 20 unseen notes: ([0-9.]+) -> ([0-9.]+)", text)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0
    assert "before:" in text and "after:" in text


def test_demo_split_is_disjoint_and_deterministic():
    from tinker_nb.demo import DEMO, demo_split

    train, held = demo_split(500, 50)
    assert len(train) == 500 and len(held) == 50 and not set(train) & set(held)
    assert demo_split(500, 50) == (train, held)
    assert all(r.startswith("Patient note:") for r in train + held)
    assert DEMO["epsilon"] == 8.0


def test_a_short_dp_run_visibly_learns_the_private_notes(tmp_path):
    """Issue 12 item 7: after a short DP run at ε = 8 (notebook 01's TINKER_NB_FAST settings) the held-out
    loss drops several-fold and the after-samples take the notes' form. The noise is not seedable (it comes
    from a secure generator), so the thresholds leave a wide margin: measured 5.67 -> 0.66 and 0.69 (docs/NOTEBOOK.md)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TINKER_NB_KEY_DIR=str(tmp_path / "keys"))
    out = subprocess.run([sys.executable, "-m", "tinker_nb.demo", "--steps", "16", "--batch", "64", "--heldout", "100",
                          "--workspace", str(tmp_path / "ws")], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    eps = float(re.search(r"privacy: ε = ([0-9.]+) \(PLD", text).group(1))
    assert 0 < eps <= 8.0
    m = re.search(r"held-out loss per token on 100 unseen notes: ([0-9.]+) -> ([0-9.]+)", text)
    before, after = float(m.group(1)), float(m.group(2))
    assert after < 0.5 * before, text
    afters = re.findall(r"after:\s+'(.*)'", text)
    assert len(afters) == 2
    markers = ("year old", "reports", "On exam", "exam,", "Plan:", " mg", "follow-up")
    assert sum(any(k in a for k in markers) for a in afters) >= 1, afters
