"""Adversarial audit of what reports privacy (metrics, certificates, the audit runner): public calls only.

Each test is one way a public call made a reported ε smaller than what was spent, or called a run valid
when it was not; each failed before its fix (see the commit that added it).
"""

from __future__ import annotations

import pytest

from tinker_nb import (
    BudgetExceededError,
    DPConfig,
    ServiceClient,
    StateError,
    accounting,
)

from .helpers import RECORDS, dp_config, legacy_pool, step


def _recipient():
    from tinker_nb.security.kem import RecipientIdentity

    return RecipientIdentity.generate().public_key()


def _certificate(path):
    from tinker_nb.tgsp import inspect_package

    return inspect_package(path)["dp_certificate.json"]


# -- A. a fresh client that loads a caller-supplied checkpoint ----------------------------------------
def test_a_fresh_client_that_loads_caller_supplied_weights_reports_their_budget(tiny_model, tmp_path):
    """Weights trained on caller-supplied batches, loaded into a fresh client: ε was reported 0 and valid."""
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    a = svc.create_training_client(dp_config(tiny_model))
    for _ in range(3):
        step(a, RECORDS[:4])
    spent = a.get_dp_metrics().epsilon_spent
    assert spent > 0
    saved = a.save_state("caller-trained")
    a.close()

    b = svc.create_training_client(dp_config(tiny_model))
    b.load_state(saved.artifact_id)
    m = b.get_dp_metrics()
    assert m.epsilon_spent == pytest.approx(spent)  # the weights carry those steps
    assert not m.accounting_valid and m.sampling == "caller-supplied"
    b.package(tmp_path / "b.tgsp", recipients=[_recipient()])
    cert = _certificate(tmp_path / "b.tgsp")
    assert cert["epsilon"] == pytest.approx(spent, rel=1e-3)
    assert cert["accounting_valid"] is False and cert["sampling"] == "caller-supplied"
    from tinker_nb.tgsp import verify_package

    report = verify_package(tmp_path / "b.tgsp", trust=[svc.publisher_key()])  # and it verifies
    assert report.certificate["epsilon"] == pytest.approx(spent, rel=1e-3)
    b.close()


def test_attach_after_loading_or_passing_caller_batches_is_refused(tiny_model, tmp_path):
    """A client whose weights hold caller-supplied steps cannot re-label itself a Poisson run of a data set."""
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    a = svc.create_training_client(dp_config(tiny_model))
    step(a, RECORDS[:4])
    saved = a.save_state("caller-trained")
    a.close()

    b = svc.create_training_client(dp_config(tiny_model))
    b.load_state(saved.artifact_id)
    with pytest.raises(StateError):
        b.attach_dataset(RECORDS)
    b.close()

    c = svc.create_training_client(dp_config(tiny_model))
    c.forward_backward(RECORDS[:4]).result()  # accumulated and charged to the caller-supplied pool, not released
    with pytest.raises(StateError):
        c.attach_dataset(RECORDS)
    c.close()


# -- B. charge_also (a superset run, e.g. a privacy audit on real data) --------------------------------
def test_a_non_dp_superset_run_makes_the_subsets_epsilon_unbounded(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    subset = RECORDS[:30]
    plain = svc.create_training_client(dp_config(tiny_model, dp_config=None))
    plain.attach_dataset(RECORDS, charge_also=subset)
    draws = plain.poisson_batches(steps=3)
    for d in draws:
        if plain.forward_backward(d).result().examples:
            plain.optim_step().result()
            break
    plain.close()
    late = svc.create_training_client(dp_config(tiny_model))
    with pytest.raises(BudgetExceededError, match="WITHOUT differential privacy"):
        late.attach_dataset(subset)
    late.close()


def test_a_non_dp_privacy_audit_on_real_data_makes_the_datas_epsilon_unbounded(tiny_model, tmp_path):
    from tinker_nb.privacy_audit import audit_privacy

    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    data = RECORDS[:24]
    audit_privacy(dp_config(tiny_model, dp_config=None), data, n_canaries=8, on_real_data=True, service=svc,
                  steps=2, seed=3)
    late = svc.create_training_client(dp_config(tiny_model))
    with pytest.raises(BudgetExceededError, match="WITHOUT differential privacy"):
        late.attach_dataset(data)
    late.close()


def test_caller_batches_of_a_superset_run_are_charged_to_the_subset_too(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    subset = RECORDS[:30]
    tc = svc.create_training_client(dp_config(tiny_model))
    tc.attach_dataset(RECORDS, charge_also=subset)
    step(tc, subset[:4])  # the caller's own batch, drawn from the subset
    tc.close()
    other = svc.create_training_client(dp_config(tiny_model))
    other.attach_dataset(subset)
    m = other.get_dp_metrics()
    assert m.caller_supplied_mu2 == pytest.approx(1.0) and m.epsilon_spent > 0
    assert not m.accounting_valid
    other.close()


# -- C. participation counting: a record is its tokens, whatever its label mask -----------------------
def test_the_same_tokens_under_another_label_mask_are_the_same_record(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model))
    ids = tc.session.encode_text(RECORDS[0])
    masked = [-100] + ids[1:]
    step(tc, [{"input_ids": ids, "labels": ids}])
    step(tc, [{"input_ids": ids, "labels": masked}])
    assert tc.get_dp_metrics().caller_supplied_mu2 == pytest.approx(2.0)  # k=2 participations at σ=1
    step(tc, [{"input_ids": ids, "labels": ids}, {"input_ids": ids, "labels": masked}])
    assert tc.get_dp_metrics().caller_supplied_mu2 == pytest.approx(2.0 + 4.0)  # m=2 in one step: m²/σ²
    tc.close()


# -- D. a fixed noise seed on a data set invalidates every run on it ----------------------------------
def test_a_seeded_client_on_the_data_set_invalidates_every_clients_accounting(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    seeded = svc.create_training_client(dp_config(tiny_model), noise_seed=7)
    seeded.attach_dataset(RECORDS)
    step(seeded, next(seeded.poisson_batches(steps=1)))
    saved = seeded.save_state("seeded")
    seeded.close()

    tc = svc.create_training_client(dp_config(tiny_model))
    tc.attach_dataset(RECORDS)
    step(tc, next(tc.poisson_batches(steps=1)))
    m = tc.get_dp_metrics()
    assert not m.accounting_valid and any("seed" in n for n in m.notes)
    tc.package(tmp_path / "t.tgsp", recipients=[_recipient()])
    from tinker_nb.tgsp import verify_package

    verify_package(tmp_path / "t.tgsp", trust=[svc.publisher_key()])
    cert = _certificate(tmp_path / "t.tgsp")
    assert cert["accounting_valid"] is False and "fixed" in cert["noise_seed"]
    tc.load_state(saved.artifact_id)  # the seeded weights themselves
    assert not tc.get_dp_metrics().accounting_valid
    tc.close()
    budgets = {b["pool"]: b for b in svc.privacy_budgets()}
    assert any(b.get("noise_known_clients") for b in budgets.values())


# -- E. an unbounded data set admits no DP step, with or without a target ------------------------------
def test_a_dp_client_without_a_target_cannot_attach_a_data_set_trained_without_dp(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    plain = svc.create_training_client(dp_config(tiny_model, dp_config=None))
    plain.attach_dataset(RECORDS)
    d = next(plain.poisson_batches(steps=1))
    plain.forward_backward(d).result()
    plain.close()
    no_target = svc.create_training_client(
        dp_config(tiny_model, dp_config=DPConfig(noise_multiplier=1.0, target_delta=1e-3)))
    with pytest.raises(BudgetExceededError, match="WITHOUT differential privacy"):
        no_target.attach_dataset(RECORDS)
    no_target.close()


def test_reported_epsilon_after_a_refused_caller_step_is_unchanged(tiny_model, tmp_path):
    """A caller-supplied step the budget refuses charges nothing (the μ² of its records is not committed)."""
    cfg = dp_config(tiny_model, dp_config=DPConfig(noise_multiplier=1.0, target_epsilon=7.0, target_delta=1e-3))
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(cfg)
    spent = []
    with pytest.raises(BudgetExceededError):
        for _ in range(50):
            step(tc, RECORDS[:4])
            spent.append(tc.get_dp_metrics().epsilon_spent)
    m = tc.get_dp_metrics()
    assert len(spent) == 3 and m.epsilon_spent == pytest.approx(spent[-1]) and m.epsilon_spent <= 7.0
    k = len(spent)
    assert m.epsilon_spent == pytest.approx(accounting.gaussian_mu2_epsilon(float(k), delta=1e-3), rel=2e-2)
    tc.close()


# -- F. the budget belongs to the records, not to their order -----------------------------------------
def test_the_same_records_in_another_order_share_one_budget(tiny_model, tmp_path):
    """Shuffling the data before attaching it gave a fresh pool: a new, full budget for the same people."""
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    cfg = dp_config(tiny_model)
    a = svc.create_training_client(cfg)
    a.attach_dataset(RECORDS)
    for d in a.poisson_batches(steps=2):
        step(a, d)
    a.close()
    b = svc.create_training_client(cfg)
    b.attach_dataset(list(reversed(RECORDS)))
    m = b.get_dp_metrics()
    q = cfg.batch_size / len(RECORDS)
    assert m.dataset_steps == 2
    assert m.epsilon_spent == pytest.approx(accounting.report([(1.0, q, 2)], delta=1e-3).epsilon, rel=1e-6)
    b.close()


def test_a_pool_charged_under_the_order_sensitive_name_still_counts(tiny_model, tmp_path):
    """Workspaces from before the order-free pool name keep their charges (they are carried over on attach)."""
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    cfg = dp_config(tiny_model)
    probe = svc.create_training_client(cfg)
    legacy = legacy_pool(probe, RECORDS)
    probe.close()
    q = cfg.batch_size / len(RECORDS)
    for _ in range(3):
        svc.odometer.charge("default", legacy, "old-client", poisson=(1.0, q))
    tc = svc.create_training_client(cfg)
    tc.attach_dataset(RECORDS)
    assert tc.get_dp_metrics().dataset_steps == 3
    tc.close()
    again = svc.create_training_client(cfg)
    again.attach_dataset(RECORDS)
    assert again.get_dp_metrics().dataset_steps == 3  # carried over once, not twice
    again.close()


def test_charge_also_naming_the_attached_records_charges_their_pool_once(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model))
    info = tc.attach_dataset(RECORDS, charge_also=[list(reversed(RECORDS)), RECORDS[:10], RECORDS[:10]])
    assert info["also_charged"] == 1  # the same records (any order) are the main pool; a repeated subset once
    step(tc, next(tc.poisson_batches(steps=1)))
    assert tc.get_dp_metrics().dataset_steps == 1
    tc.close()
    sub = svc.create_training_client(dp_config(tiny_model))
    sub.attach_dataset(RECORDS[:10])
    assert sub.get_dp_metrics().dataset_steps == 1
    sub.close()


def test_attach_info_never_says_a_spent_data_set_spent_nothing(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    dp = svc.create_training_client(dp_config(tiny_model))
    dp.attach_dataset(RECORDS)
    step(dp, next(dp.poisson_batches(steps=1)))
    dp.close()
    again = svc.create_training_client(dp_config(tiny_model))
    assert again.attach_dataset(RECORDS)["dataset_epsilon"] > 0
    again.close()
    plain = svc.create_training_client(dp_config(tiny_model, dp_config=None))
    assert plain.attach_dataset(RECORDS)["dataset_epsilon"] is None  # no δ to state it at; it was 0.0
    plain.close()


def test_the_sessions_config_cannot_be_swapped_after_creation(tiny_model, tmp_path):
    """Rebinding tc.session.config to a larger δ made the certificate state a smaller ε (and it verified)."""
    import dataclasses

    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    cfg = dp_config(tiny_model)
    tc = svc.create_training_client(cfg)
    loose = dataclasses.replace(cfg, dp_config=dataclasses.replace(cfg.dp_config, target_delta=0.02))
    with pytest.raises(AttributeError):
        tc.session.config = loose
    with pytest.raises(AttributeError):
        tc.session.dp = loose.dp_config
    tc.config = loose  # the client's own copy is only a view: nothing reported follows it
    tc.attach_dataset(RECORDS)
    step(tc, next(tc.poisson_batches(steps=1)))
    assert tc.get_dp_metrics().delta == 1e-3
    tc.close()
