"""Issue 12, outside review: what a user sees from the magics, the planner and a late dashboard.

Bad input gives a UsageError (magics) or an error shown in the widget, never a raw Python exception;
results print readably (no 16-digit floats); a dashboard opened after training shows the same run as
the live one did.
"""

from __future__ import annotations

import html
import re

import pytest
from IPython.core.error import UsageError

from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig

from .helpers import Displays

RECORDS = ["the cat sat on the mat", "patient reports mild headache", "the dog ran to the park",
           "a small bird sang in the old tree", "the printer on floor two is broken"] * 8
LONG_FLOAT = re.compile(r"\d\.\d{7,}")


@pytest.fixture
def tc(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="pw")
    c = svc.create_training_client(TrainingConfig(
        model_ref=tiny_model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj",)),
        dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_epsilon=30.0, target_delta=1e-3),
        batch_size=4))
    c.attach_dataset(RECORDS)
    yield c
    c.close()


@pytest.fixture
def shell(tc):
    from IPython.testing.globalipapp import get_ipython, start_ipython

    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "tinker_nb")
    ip.user_ns["review_tc"] = tc
    return ip


def _train(c, n):
    for b in c.poisson_batches(steps=n):
        c.forward_backward(b)
        c.optim_step()
    c.get_dp_metrics()


def test_status_magic_result_is_readable_and_still_a_dict(shell, tc):
    _train(tc, 2)
    m = shell.run_line_magic("tinker", "--client review_tc status")
    assert m["steps"] == 2 and m.epsilon_spent == m["epsilon_spent"]  # dict and attribute access
    assert not LONG_FLOAT.search(repr(m)), repr(m)
    assert repr(m).startswith("Status(")
    assert "<table" in m._repr_html_() and not LONG_FLOAT.search(m._repr_html_())


def test_keys_pubkey_to_a_missing_folder_is_a_usage_error(shell, tc, tmp_path):
    with pytest.raises(UsageError, match="cannot write"):
        shell.run_line_magic("tinker", f"--client review_tc keys pubkey --out {tmp_path / 'no' / 'dir' / 'pub.key'}")


@pytest.mark.parametrize("line, needle", [("--noise-multiplier 0", "noise_multiplier must be > 0"),
                                          ("--noise-multiplier -2", "noise_multiplier must be > 0"),
                                          ("--target-epsilon -1", "target_epsilon must be > 0"),
                                          ("--target-epsilon 0", "target_epsilon must be > 0")])
def test_budget_magic_shows_an_error_for_nonpositive_sigma_or_target(shell, line, needle):
    p = shell.run_line_magic("tinker", f"budget --dataset-size 2000 --batch-size 64 {line}")
    assert needle in p.error and needle in repr(p) and html.escape(needle) in p.snapshot_html()


def test_planner_repr_is_readable(shell):
    p = shell.run_line_magic("tinker", "budget --dataset-size 2000 --batch-size 64 --epochs 3 --target-epsilon 8")
    quick = repr(p)
    assert "≈=" not in quick and not LONG_FLOAT.search(quick), quick
    p.wait()
    exact = repr(p)
    assert "DPConfig(" in exact and not LONG_FLOAT.search(exact.split("→")[0]), exact


def test_dashboard_opened_after_training_shows_the_runs_clipping_and_elapsed_time(shell, tc):
    live = tc.dashboard()
    _train(tc, 4)
    live.finish(verify=False)
    late = shell.run_line_magic("tinker", "--client review_tc dashboard")
    hist = tc.metrics_history()
    clipped = sum(r["clipped"] for r in hist) / sum(r["examples"] for r in hist)
    assert late.clip_fraction == pytest.approx(clipped) == pytest.approx(live.clip_fraction)
    assert late.elapsed_s >= hist[-1]["time"] - hist[0]["time"] > 0
    assert late.steps_per_s and late.steps_per_s > 0
    assert "clipped –" not in late.snapshot_html()


def test_magic_lines_may_end_in_a_comment_as_in_the_readme(shell, tc):
    """README "In the notebook": `%tinker status          # steps, ε spent / target, ...` runs as written."""
    _train(tc, 1)
    assert shell.run_line_magic("tinker", "--client review_tc status          # steps, ε spent / target, δ")["steps"] == 1
    saved = shell.run_line_magic("tinker", "--client review_tc save run#1    # %tinker checkpoints, %tinker -h")
    assert saved.name == "run#1"  # a '#' inside a word is part of it
    meta = shell.run_line_magic("tinker", "--client review_tc save m --metadata '{\"n\": \"# not a comment\"}'  # one")
    assert meta.name == "m"
    with pytest.raises(UsageError, match="No closing quotation"):
        shell.run_line_magic("tinker", "status 'open # quote")


def test_a_dashboard_opened_right_after_a_training_cell_shows_every_queued_step(tc):
    """The training cell returns with steps still queued (backpressure keeps a few in flight): a dashboard
    opened in the next cell shows all of them, as %tinker status does, not the first with the last one's ε."""
    for b in tc.poisson_batches(steps=3):
        tc.forward_backward(b)
        tc.optim_step()
    d = tc.dashboard()  # no drain before: the queue may still hold steps
    m = tc.get_dp_metrics()
    assert d.step == m.steps == 3 and d.epsilon == m.epsilon_spent
    assert len(d._steps) == 3


def test_a_dashboard_that_is_not_training_becomes_static_once_a_later_cell_runs(tc, monkeypatch):
    """Opened after training (or never trained on), it must not stay a live widget: after a restart from the
    page JupyterLab would show 'model not found'. Training brings the live view back."""
    disp = Displays(monkeypatch)
    _train(tc, 2)
    d = tc.dashboard().show()
    d.after_cell(5)  # its own cell: stays live
    assert not d.frozen
    d.after_cell(6)  # a later cell
    if d._freezer is not None:
        d._freezer.join(30)
    kind, bundle, did = disp.calls[-1]
    assert d.frozen and kind == "update" and did == d._display_id and not disp.live(bundle)
    assert "step <b data-k=\"step\">2</b>" in bundle["text/html"]
    for b in tc.poisson_batches(steps=1):
        tc.forward_backward(b)
        tc.optim_step()
    tc.metrics_history()
    assert not d.frozen and any(k == "update" and disp.live(b) for k, b, _ in disp.calls)


def test_a_planner_or_dashboard_shown_by_a_cell_stays_live_until_the_next_cell(shell, tc, monkeypatch):
    """Through real cells (IPython's own post_run_cell and execution counter, which IPython 9 advances
    before the cell body runs): the display stays interactive in the cell that showed it."""
    disp = Displays(monkeypatch)
    shell.run_cell("from tinker_nb.notebook.planner import BudgetPlanner as _BP\n"
                   "_p = _BP(dataset_size=2000, batch_size=64, epochs=1)\n_p", store_history=True)
    p = shell.user_ns["_p"]
    assert p._display_id is not None and not p.frozen, "the planner froze at the end of its own cell"
    shell.run_cell("_d = review_tc.dashboard()\n_d", store_history=True)
    d = shell.user_ns["_d"]
    assert d._display_id is not None and not d.frozen and p.frozen
    shell.run_cell("1 + 1", store_history=True)
    assert d.frozen
    assert disp.calls


def test_an_interrupted_run_is_stated_in_the_dashboard_and_the_keyboard_interrupt(tc):
    """Issue 12 item 1: after the stop button the user sees what ran and that queued steps were not charged."""
    import _thread
    import threading

    d = tc.dashboard()
    fired = threading.Event()

    def on_step(kind, payload):
        if payload.get("step") == 2 and not fired.is_set():
            fired.set()
            _thread.interrupt_main()

    tc.events.subscribe(on_step, kind="step")
    with pytest.raises(KeyboardInterrupt) as info:
        for b in tc.poisson_batches(steps=200):
            tc.forward_backward(b)
            tc.optim_step()
    assert "not charged" in str(info.value) and "get_dp_metrics" in str(info.value)
    m = tc.get_dp_metrics()
    assert d.status == "interrupted" and f"{m.steps} steps ran" in d.warning, d.warning
    assert "interrupted" in d.snapshot_html() and f"{m.steps} steps ran" in d.snapshot_html()
    for b in tc.poisson_batches(steps=1):  # training again: the interrupt notice goes
        tc.forward_backward(b)
        tc.optim_step()
    tc.metrics_history()
    d._flush()  # (the dashboard sends at most MAX_RATE updates a second; a trailing timer sends the rest)
    assert d.status == "training" and d.warning == ""


def test_save_magic_name_is_optional_like_save_state_and_tail_must_be_positive(shell, tc):
    _train(tc, 1)
    saved = shell.run_line_magic("tinker", "--client review_tc save")
    assert saved.name == "step-1"
    with pytest.raises(UsageError, match="--tail"):
        shell.run_line_magic("tinker", "--client review_tc audit --tail -1")
