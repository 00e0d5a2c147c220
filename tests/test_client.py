"""The public API end to end: train, save, 'restart the kernel', load, continue, verify the ledger."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tinker_nb import BudgetExceededError, ConfigError, DPConfig, LoRAConfig, ServiceClient, StateError, TrainingConfig

RECORDS = ["the cat sat on the mat", "patient reports mild headache", "the dog ran to the park",
           "a small bird sang in the old tree", "the printer on floor two is broken"] * 8


def _cfg(model, **kw):
    base = dict(model_ref=model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj")),
                dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_epsilon=20.0, target_delta=1e-3),
                batch_size=4, learning_rate=1e-2)
    base.update(kw)
    return TrainingConfig(**base)


def test_train_save_restart_load_continue(tiny_model, tmp_path):
    ws = tmp_path / "ws"
    svc = ServiceClient(ws, passphrase="correct horse battery staple")
    tc = svc.create_training_client(_cfg(tiny_model))
    tc.attach_dataset(RECORDS)
    futs = []
    for b in tc.poisson_batches(steps=3):
        futs.append(tc.forward_backward(b))
        tc.optim_step()
    assert all(f.result().examples >= 0 for f in futs)
    m1 = tc.get_dp_metrics()
    assert m1.steps == 3 and m1.sampling == "poisson" and m1.accounting_valid
    assert 0 < m1.epsilon_spent < m1.target_epsilon
    saved = tc.save_state("step-3", metadata={"note": "x"})
    assert saved.artifact_id and saved["encryption"]["algorithm"]
    tc.close()
    with pytest.raises(StateError, match="closed"):
        tc.forward_backward(RECORDS[:2])

    # A new kernel: new process, same workspace and passphrase.
    code = textwrap.dedent(f"""
        import json
        from tinker_nb import ServiceClient, TrainingConfig, LoRAConfig, DPConfig
        svc = ServiceClient({str(ws)!r}, passphrase="correct horse battery staple")
        cfg = TrainingConfig.from_dict(json.loads({json.dumps(_cfg(tiny_model).to_dict())!r}))
        tc = svc.create_training_client(cfg)
        tc.attach_dataset({RECORDS!r})
        tc.load_state({saved.artifact_id!r})
        m = tc.get_dp_metrics()
        # load_state restores weights, never the budget: the data set's odometer still holds the 3 steps.
        assert m.steps == 0 and m.dataset_steps == 3, (m.steps, m.dataset_steps)
        for b in tc.poisson_batches(steps=2):
            tc.forward_backward(b); tc.optim_step()
        m2 = tc.get_dp_metrics()
        rep = tc.audit_log().verify()
        print(json.dumps({{"steps": m2.dataset_steps, "eps1": m.epsilon_spent, "eps2": m2.epsilon_spent, "ok": rep.ok}}))
        tc.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["steps"] == 5 and res["ok"]
    assert res["eps1"] == pytest.approx(m1.epsilon_spent)
    assert res["eps2"] > res["eps1"]


def test_wrong_passphrase_cannot_load(tiny_model, tmp_path):
    from tinker_nb import KeyAccessError

    ws = tmp_path / "ws"
    svc = ServiceClient(ws, passphrase="right")
    tc = svc.create_training_client(_cfg(tiny_model, dp_config=None))
    tc.forward_backward(RECORDS[:2]).result()
    tc.optim_step().result()
    saved = tc.save_state("s")
    tc.close()
    with pytest.raises(KeyAccessError):
        ServiceClient(ws, passphrase="wrong").store.load(saved.artifact_id)


def test_budget_refusal_surfaces_through_futures(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    cfg = _cfg(tiny_model, dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_epsilon=1.0,
                                              target_delta=1e-3))
    tc = svc.create_training_client(cfg)
    tc.attach_dataset(RECORDS)
    refused = False
    max_steps = tc.get_dp_metrics().max_steps
    assert 0 < max_steps < 200
    for b in tc.poisson_batches(steps=max_steps + 3):
        try:
            tc.forward_backward(b)
            tc.optim_step()
        except BudgetExceededError:
            refused = True
            break
    if not refused:  # the loop may end before the refusal ran: the next call raises it
        with pytest.raises(BudgetExceededError):
            tc.get_dp_metrics()
    m = tc.get_dp_metrics()
    assert m.epsilon_spent <= 1.0 and m.steps == m.max_steps
    entries = tc.audit_log().size()
    assert entries > m.steps
    tc.close()


def test_load_unknown_artifact_and_bad_save_args(tiny_model, tmp_path):
    from tinker_nb import TinkerError

    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(_cfg(tiny_model, dp_config=None))
    with pytest.raises(TinkerError):
        tc.load_state("does-not-exist")
    with pytest.raises(ConfigError):
        tc.save_state("")
    with pytest.raises(ConfigError):
        tc.save_state("x", metadata={"bad": object()})
    assert tc.list_checkpoints() == []
    tc.close()


def test_audit_entries_hold_no_raw_text(tiny_model, tmp_path):
    ws = tmp_path / "ws"
    svc = ServiceClient(ws, passphrase="p")
    tc = svc.create_training_client(_cfg(tiny_model))
    secret = "patient zorblax has condition quux"
    tc.attach_dataset([secret] + RECORDS)
    b = next(tc.poisson_batches(steps=1))
    tc.forward_backward(b)
    tc.optim_step().result()
    tc.sample(["the cat"], max_tokens=4)
    tc.close()
    for f in ws.rglob("*"):
        if f.is_file():
            assert b"zorblax" not in f.read_bytes(), f


def test_key_rotation_and_shredding_are_audited_and_shredding_needs_confirmation(tiny_model, tmp_path):
    from tinker_nb import KeyAccessError

    svc = ServiceClient(tmp_path / "ws", passphrase="p", tenant="clinic")
    tc = svc.create_training_client(_cfg(tiny_model, dp_config=None))
    tc.forward_backward(RECORDS[:2]).result()
    tc.optim_step().result()
    saved = tc.save_state("s")
    res = svc.rotate_keys()
    assert res["primary_version"] == 2 and res["rewrapped"] == 1
    assert tc.load_state(saved.artifact_id)["step"] == 1  # rewrapped, still readable
    n = svc.ledger.size()
    with pytest.raises(ConfigError, match="irreversible"):
        svc.shred_tenant(confirm="other")
    assert svc.ledger.size() == n  # the refused call changed nothing
    assert svc.shred_tenant(confirm="clinic")["artifacts_unrecoverable"] == 1
    with pytest.raises(KeyAccessError, match="crypto-shredded"):
        svc.store.load(saved.artifact_id)
    ops = [e.operation for e in svc.ledger.entries()]
    assert ops.count("rotate_keys") == 1 and ops[-1] == "shred_tenant"
    rep = svc.ledger.verify()
    assert rep.ok and rep.checkpoints_checked >= 3  # save, rotation and shredding each signed a checkpoint
    tc.close()
