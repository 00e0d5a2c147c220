"""Dashboard, planner, views and %tinker magics against a real training client."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig, accounting
from tinker_nb.errors import ConfigError

from .helpers import Displays

RECORDS = ["the cat sat on the mat", "patient reports mild headache", "the dog ran to the park",
           "a small bird sang in the old tree", "the printer on floor two is broken"] * 8


@pytest.fixture
def tc(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="pw")
    c = svc.create_training_client(TrainingConfig(
        model_ref=tiny_model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj")),
        dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_epsilon=30.0, target_delta=1e-3),
        batch_size=4))
    c.attach_dataset(RECORDS)
    yield c
    c.close()


def _train(c, n):
    for b in c.poisson_batches(steps=n):
        c.forward_backward(b)
        c.optim_step()
    c.get_dp_metrics()


def test_dashboard_follows_events_throttled_and_finishes(tc):
    from tinker_nb.notebook.dashboard import Dashboard

    d = tc.dashboard()
    assert isinstance(d, Dashboard) and d.step == 0
    for b in tc.poisson_batches(steps=12):  # finish() right after queuing: must not deadlock
        tc.forward_backward(b)
        tc.optim_step()
    d.finish()
    m = tc.get_dp_metrics()
    assert d.step == 12 and d.status == "done"
    assert d.epsilon == pytest.approx(m.epsilon_spent)
    assert d.audit["verified"] is True and d.audit["entries"] > 12
    assert len(d.loss_history) == 12 * 2 * 4  # (step, loss) float32 pairs
    # throttled: at most one state message per step (plus a ledger refresh at most once a second)
    assert d.messages_sent <= 2 * 12 + 3
    html = d.snapshot_html()
    assert "tinker_nb" in html and "<script" not in html and "not private" in html
    assert "step 12" in d.text()
    d.detach()


def test_dashboard_shows_refusal_and_interrupt(tc):
    d = tc.dashboard()
    tc.events.publish("budget_refused", {"epsilon_would_be": 31.0, "target": 30.0, "step": 3})
    assert d.status == "refused" and "budget" in d.warning
    tc.events.publish("interrupt", {"operation": "forward_backward", "step": 3})
    assert d.status == "interrupted"


def test_no_widgets_mode_is_text_and_html(tc, monkeypatch):
    monkeypatch.setenv("TINKER_NB_NO_WIDGETS", "1")
    bundle = tc.dashboard()._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}


def test_plan_matches_accountant_and_calibrates():
    p = accounting.steps_for_epochs(sample_rate=64 / 10_000, epochs=2)
    from tinker_nb.notebook.planner import BudgetPlanner, plan

    r = plan(dataset_size=10_000, batch_size=64, epochs=2, noise_multiplier=1.0)
    assert r.steps == p and r.epsilon == accounting.report([(1.0, 0.0064, p)], delta=1e-5).epsilon
    assert r.epsilon_rdp >= r.epsilon and r.curve[-1][0] == p and "DPConfig(" in r.dp_config
    t = plan(dataset_size=10_000, batch_size=64, epochs=2, target_epsilon=3.0)
    assert 0.99 * 3.0 <= t.epsilon <= 3.0
    with pytest.raises(ConfigError):
        plan(dataset_size=10, batch_size=64, epochs=1, noise_multiplier=1.0)
    w = BudgetPlanner(dataset_size=5000, batch_size=50, epochs=1)
    eps1 = w.wait().epsilon
    w.noise_multiplier = 2.0
    assert w.wait().epsilon < eps1 and len(w.curve) > 0
    w.batch_size = 10**6
    assert "batch_size" in w.error


def test_views(tc):
    from tinker_nb.notebook import views

    _train(tc, 3)
    tc.save_state("v")
    assert len(views.metrics_frame(tc)) == 3
    assert list(views.checkpoints_frame(tc)["name"]) == ["v"]
    assert len(views.audit_frame(tc)) > 3
    assert views.epsilon_figure(tc).data and views.loss_figure(tc).data


@pytest.fixture
def shell(tc):
    from IPython.testing.globalipapp import get_ipython, start_ipython

    ip = start_ipython() or get_ipython()  # one global test shell per process
    ip.run_line_magic("load_ext", "tinker_nb")
    ip.user_ns["my_tc"] = tc
    return ip


def test_magics(shell, tc, capsys):
    from IPython.core.error import UsageError

    _train(tc, 2)
    m = shell.run_line_magic("tinker", "status")
    assert m["steps"] == 2
    saved = shell.run_line_magic("tinker", "save ckpt --metadata '{\"note\": \"x\"}'")
    assert shell.run_line_magic("tinker", "checkpoints")["artifact_id"].tolist() == [saved.artifact_id]
    assert shell.run_line_magic("tinker", f"load {saved.artifact_id}")["step"] == 2
    df = shell.run_line_magic("tinker", "audit --verify --tail 3")
    assert len(df) == 3 and "intact" in capsys.readouterr().out
    assert shell.run_line_magic("tinker", "keys info")["primary_version"] == 1
    assert shell.run_line_magic("tinker", "keys rotate")["primary_version"] == 2
    assert shell.run_line_magic("tinker", "--client my_tc status")["steps"] == 2
    assert type(shell.run_line_magic("tinker", "budget")).__name__ == "BudgetPlanner"
    shell.run_line_magic("tinker", "save -h")
    assert "usage" in capsys.readouterr().out
    # package for a recipient with the workspace publisher key, then verify it against that pinned key
    from tinker_nb.security.kem import RecipientIdentity

    tmp = Path(tempfile.mkdtemp())
    RecipientIdentity.generate().public_key().save(tmp / "alice.pub")
    pub = shell.run_line_magic("tinker", f"keys pubkey --out {tmp / 'publisher.pub'}")
    assert pub.key_id == tc.service.publisher_key().key_id
    manifest = shell.run_line_magic("tinker", f"package {tmp / 'm.tgsp'} --recipient {tmp / 'alice.pub'}")
    rep = shell.run_line_magic("tinker", f"verify {tmp / 'm.tgsp'} --trust {tmp / 'publisher.pub'}")
    assert rep.ok and rep.package_id == manifest["package_id"]
    other = tmp / "other.pub"
    from tinker_nb.security.signing import HybridSigner

    HybridSigner.generate().public_key().save(other)
    with pytest.raises(UsageError, match="TrustError"):
        shell.run_line_magic("tinker", f"verify {tmp / 'm.tgsp'} --trust {other}")
    for bad in (f"package {tmp / 'x.tgsp'} --recipient {tmp / 'missing.pub'}", f"package {tmp / 'x.tgsp'}",
                f"verify {tmp / 'm.tgsp'}", f"verify {tmp / 'nope.tgsp'} --trust {other}", "keys destroy"):
        with pytest.raises(UsageError):
            shell.run_line_magic("tinker", bad)
    assert not (tmp / "x.tgsp").exists()
    for bad in ("frobnicate", "save x --metadata notjson", "save x --metadata '[1]'", "load",
                "--client nope status", "audit --tail x", "load does-not-exist", "save 'unbalanced"):
        with pytest.raises(UsageError):
            shell.run_line_magic("tinker", bad)


# ---------------------------------------------------------------------------------------------- issue 12
EMOJI_RANGES = [(0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x1F000, 0x1FAFF), (0xFE0F, 0xFE0F)]


def _emoji(text: str) -> list[str]:
    return [c for c in text if any(lo <= ord(c) <= hi for lo, hi in EMOJI_RANGES)]


def test_dashboard_progress_eta_rate_and_live_epsilon_from_step_events(tc):
    import numpy as np

    d = tc.dashboard(total_steps=10)
    seen = {"eta": [], "eps": []}
    d.observe(lambda ch: seen["eta"].append(ch.new), names=["eta_s"])
    d.observe(lambda ch: seen["eps"].append(ch.new), names=["epsilon"])
    for b in tc.poisson_batches(steps=10):
        tc.forward_backward(b)
        tc.optim_step().result()
    d.finish()
    hist = tc.metrics_history()
    assert d.step == 10 and d.total_steps == 10 and d.status == "done"
    assert d.elapsed_s > 0 and d.steps_per_s and d.steps_per_s > 0
    assert any(e is not None and e >= 0 for e in seen["eta"]) and d.eta_s is None  # ETA while training, none after
    # the ε curve is exactly the step events' live upper bounds, one per step
    xy = np.frombuffer(d.eps_history, dtype=np.float32).reshape(-1, 2)
    assert list(xy[:, 0]) == [r["step"] for r in hist]
    assert np.allclose(xy[:, 1], [min(r["epsilon"], r["target_epsilon"]) for r in hist], rtol=1e-6)
    assert all(r["epsilon"] >= tc.get_dp_metrics().epsilon_spent - 1e-9 for r in hist[-1:])  # live ≥ reported
    assert d.epsilon == pytest.approx(tc.get_dp_metrics().epsilon_spent) and d.epsilon_kind == "reported"
    assert "step 10/10" in d.text() and "steps/s" in d.text()
    assert d.clip_fraction is not None and 0 <= d.clip_fraction <= 1


def test_live_bound_is_capped_at_the_target():
    from tinker_nb.notebook.dashboard import Dashboard

    d = Dashboard()
    d._on_event("step", {"step": 5, "time": 1.0, "epsilon": 9.1, "target_epsilon": 8.0, "loss": 1.0})
    d._flush()
    assert d.epsilon == 8.0 and d.epsilon_kind == "live upper bound"
    d._on_event("step", {"step": 6, "time": 2.0, "epsilon": 3.0, "target_epsilon": 8.0, "loss": 1.0})
    d._flush()
    assert d.epsilon == 3.0


def test_percent_spent_is_exact_not_a_threshold():
    from tinker_nb.notebook.dashboard import Dashboard, fmt_duration, percent_spent

    assert percent_spent(7.976, 8.0) == 99.7 and percent_spent(6.4, 8.0) == 80.0 and percent_spent(1, None) is None
    assert percent_spent(7.9999, 8.0) < 100.0  # floored: never shows more room than there is, nor 100% early
    d = Dashboard(target_epsilon=8.0, epsilon=7.976, status="training")
    assert "99.7% spent" in d.text() and "99.7% of the ε budget spent" in d.snapshot_html()
    assert fmt_duration(75) == "1:15" and fmt_duration(3725) == "1:02:05" and fmt_duration(None) == "–"


def test_no_emoji_anywhere_in_the_widgets(tc):
    from tinker_nb.notebook import dashboard, planner

    for f in ("dashboard.js", "planner.js", "dashboard.css"):
        assert not _emoji((dashboard.STATIC / f).read_text()), f
    d = tc.dashboard()
    tc.events.publish("budget_refused", {"epsilon_would_be": 31.0, "target": 30.0, "step": 3})
    tc.events.publish("budget_warning", {"step": 3})
    assert d.status == "refused" and not _emoji(d.warning + d.snapshot_html() + d.text())
    assert "<svg" in d.snapshot_html()  # the refusal icon is inline SVG
    assert not _emoji(planner.plan_html(planner.plan(dataset_size=1000, batch_size=10, epochs=1, noise_multiplier=1.0)))


def test_dashboard_opened_after_training_agrees_with_status(shell, tc):
    _train(tc, 3)
    tc.save_state("after")
    m = shell.run_line_magic("tinker", "status")
    d = shell.run_line_magic("tinker", "dashboard")
    assert d.step == m["steps"] == 3 and d.status == "done"
    assert d.epsilon == m["epsilon_spent"] and d.epsilon_kind == "reported"
    assert d.checkpoints == m["checkpoints"] == 1
    hist = tc.metrics_history()  # the steps it did not watch: clipping from their per-step counts, never a false 0%
    assert d.clip_fraction == sum(r["clipped"] for r in hist) / sum(r["examples"] for r in hist)
    assert f"clipped {100 * d.clip_fraction:.0f}%" in d.snapshot_html()


def test_dashboard_becomes_static_html_when_the_run_ends_and_live_again_when_it_resumes(tc, monkeypatch):
    disp = Displays(monkeypatch)
    d = tc.dashboard().show()
    kind, bundle, did = disp.calls[-1]
    assert kind == "display" and disp.live(bundle) and did.startswith("tinker-nb-dashboard-")
    _train(tc, 3)
    d.finish()
    kind, bundle, did2 = disp.calls[-1]
    assert kind == "update" and did2 == did and not disp.live(bundle) and d.frozen
    assert "snapshot (static)" in bundle["text/html"] and "<script" not in bundle["text/html"]
    assert "step <b data-k=\"step\">3</b>" in bundle["text/html"]
    n = len(disp.calls)
    for b in tc.poisson_batches(steps=2):  # training resumes: the live view comes back
        tc.forward_backward(b)
        tc.optim_step()
    tc.metrics_history()
    assert any(k == "update" and disp.live(b) for k, b, _ in disp.calls[n:]) and not d.frozen
    d.after_cell()  # IPython post_run_cell: freezes once the queued work is done
    d._freezer.join(30)
    kind, bundle, _ = disp.calls[-1]
    assert kind == "update" and not disp.live(bundle) and "step <b data-k=\"step\">5</b>" in bundle["text/html"]


def test_kernel_shutdown_freezes_every_live_display(tc, monkeypatch):
    from tinker_nb.notebook import _display
    from tinker_nb.notebook.planner import BudgetPlanner

    disp = Displays(monkeypatch)
    d = tc.dashboard().show()
    p = BudgetPlanner(dataset_size=2000, batch_size=64, epochs=1).show()
    p.wait()
    assert _display.freeze_all() == 2
    frozen = {did: b for k, b, did in disp.calls if k == "update"}
    assert set(frozen) == {d._display_id, p._display_id}
    assert all(not disp.live(b) and "text/html" in b for b in frozen.values())
    assert "privacy budget plan" in frozen[p._display_id]["text/html"]


def test_plan_dp_config_reproduces_the_plan_exactly():
    from tinker_nb import DPConfig  # noqa: F401 - used by eval
    from tinker_nb.notebook.planner import plan

    cases = [dict(dataset_size=2000, batch_size=64, epochs=6.4, target_epsilon=8.0),
             dict(dataset_size=2000, batch_size=64, epochs=6.4, target_epsilon=7.99),
             dict(dataset_size=10_000, batch_size=64, epochs=3, noise_multiplier=1.0),
             dict(dataset_size=50_000, batch_size=256, epochs=2, noise_multiplier=0.8123456)]
    for kw in cases:
        p = plan(**kw)
        cfg = eval(p.dp_config)  # the line users copy
        assert cfg.noise_multiplier == p.noise_multiplier and cfg.target_delta == p.delta
        if "target_epsilon" in kw:
            assert cfg.target_epsilon == kw["target_epsilon"]  # never rounded (down or up)
        assert cfg.target_epsilon >= p.epsilon
        # what the engine enforces: every planned step fits the budget
        allowed = accounting.max_steps_within(noise_multiplier=cfg.noise_multiplier, sample_rate=p.sample_rate,
                                              target_epsilon=cfg.target_epsilon, delta=cfg.target_delta)
        assert allowed >= p.steps, (kw, allowed, p.steps)


def test_planner_answers_fast_then_exact_and_shows_errors():
    import time

    from tinker_nb.notebook.planner import BudgetPlanner, quick_plan

    w = BudgetPlanner(dataset_size=2000, batch_size=64, epochs=6.4, mode="target", target_epsilon=8.0)
    w.wait()
    for v in (2.0, 3.0, 4.5):  # a drag: every move answers at once, the exact answer follows for the last one
        t0 = time.perf_counter()
        w.target_epsilon = v
        assert (time.perf_counter() - t0) < 0.2 and w.last_update_ms < 200
        assert w.result["exact"] is False and w.busy
    p = w.wait()
    assert w.result["exact"] is True and not w.busy and p.target_epsilon == 4.5 and "target_epsilon=4.5" in p.dp_config
    q = quick_plan(dataset_size=2000, batch_size=64, epochs=6.4, target_epsilon=4.5)
    assert abs(q.noise_multiplier - p.noise_multiplier) / p.noise_multiplier < 0.2  # the quick answer is close
    w.dataset_size = 32  # N < batch
    assert "larger than the data set size" in w.error and w.result == {} and not w.busy
    assert "larger than the data set size" in w.snapshot_html()
    w.dataset_size = 2000
    w.wait()
    html = w.snapshot_html()
    assert not w.error and "optimizer steps" in html and "ε at δ=" in html and "target ε" in html


def test_magics_help_printed_once(shell, capsys):
    shell.run_line_magic("tinker", "-h")
    out = capsys.readouterr().out
    assert out.count("usage: %tinker") == 1
    shell.run_line_magic("tinker", "status -h")
    out = capsys.readouterr().out
    assert out.count("usage: %tinker status") == 1 and "DP fine-tuning from the notebook" not in out
    shell.run_line_magic("tinker", "budget --target-epsilon 4 --dataset-size 2000 --batch-size 64 --epochs 2")
    from IPython.core.error import UsageError

    with pytest.raises(UsageError):
        shell.run_line_magic("tinker", "budget --target-epsilon 4 --noise-multiplier 1")


def test_metrics_frame_time_is_datetime(tc):
    import pandas as pd

    from tinker_nb.notebook import views

    _train(tc, 2)
    df = views.metrics_frame(tc)
    assert pd.api.types.is_datetime64_any_dtype(df["time"])


def test_planner_keeps_its_last_plan_as_static_html_once_a_later_cell_runs(monkeypatch):
    from tinker_nb.notebook.planner import BudgetPlanner

    disp = Displays(monkeypatch)
    p = BudgetPlanner(dataset_size=2000, batch_size=64, epochs=1, mode="target", target_epsilon=3.0).show()
    p.after_cell(7)  # the planner's own cell: stays live
    assert not p.frozen
    p.target_epsilon = 2.0
    p.after_cell(8)  # the next cell: the last plan becomes static HTML
    kind, bundle, did = disp.calls[-1]
    assert p.frozen and kind == "update" and did == p._display_id and not disp.live(bundle)
    assert "target_epsilon=2.0" in bundle["text/html"]
