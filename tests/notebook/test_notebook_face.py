"""Dashboard, planner, views and %tinker magics against a real training client."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig, accounting
from tinker_nb.errors import ConfigError

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
    assert d.messages_sent <= 12 + 3  # at most one flush per event burst, throttled
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
    assert r.steps == p and r.epsilon == pytest.approx(accounting.epsilon([(1.0, 0.0064, p)], delta=1e-5))
    assert r.epsilon_rdp >= r.epsilon and r.curve[-1][0] == p and "DPConfig(" in r.dp_config
    t = plan(dataset_size=10_000, batch_size=64, epochs=2, target_epsilon=3.0)
    assert 0.99 * 3.0 <= t.epsilon <= 3.0
    with pytest.raises(ConfigError):
        plan(dataset_size=10, batch_size=64, epochs=1, noise_multiplier=1.0)
    w = BudgetPlanner(dataset_size=5000, batch_size=50, epochs=1)
    eps1 = w.result["epsilon"]
    w.noise_multiplier = 2.0
    assert w.result["epsilon"] < eps1 and len(w.curve) > 0
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
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython()
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
    for bad in ("frobnicate", "save", "save x --metadata notjson", "save x --metadata '[1]'", "load",
                "--client nope status", "audit --tail x", "load does-not-exist", "save 'unbalanced"):
        with pytest.raises(UsageError):
            shell.run_line_magic("tinker", bad)
