"""privacy.sqlite cannot be lost silently: a missing, empty or older odometer is refused, never started afresh.

Each charge a client makes is proved by the tenant's audit ledger (the ``pool`` and ``pool_charges`` of its
``attach_dataset`` and ``optim_step`` entries); opening the odometer checks that it holds at least that much.
Deleting or replacing privacy.sqlite once reset every data set's budget to zero.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from tinker_nb import IntegrityError, ServiceClient
from tinker_nb.ledger import AuditLedger
from tinker_nb.ledger.log import privacy_floors
from tinker_nb.privacy import PrivacyOdometer
from tinker_nb.workspace import Workspace

from .helpers import RECORDS, dp_config, legacy_pool


def _train(ws, model, steps: int) -> float:
    svc = ServiceClient(ws, passphrase="p")
    tc = svc.create_training_client(dp_config(model))
    tc.attach_dataset(RECORDS)
    for d in tc.poisson_batches(steps=steps):
        tc.forward_backward(d)
        tc.optim_step().result()
    eps = tc.get_dp_metrics().epsilon_spent
    tc.close()
    svc.workspace.close()
    return eps


def _remove_odometer(ws):
    for suffix in ("", "-wal", "-shm"):
        (ws / f"privacy.sqlite{suffix}").unlink(missing_ok=True)


def _copy_odometer(ws, dst):
    db = sqlite3.connect(ws / "privacy.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    shutil.copy(ws / "privacy.sqlite", dst)


# -- the odometer and the ledger, without torch --------------------------------------------------------
def test_the_odometer_refuses_to_be_created_where_the_ledger_proves_charges(tmp_path):
    path = tmp_path / "privacy.sqlite"
    odo = PrivacyOdometer(path, floors=lambda: {("alice", "dataset:ab"): 3})
    with pytest.raises(IntegrityError, match=r"privacy\.sqlite is missing") as e:
        odo.pools("alice")
    assert "backup" in str(e.value) and "alice" in str(e.value)
    assert not path.exists()  # nothing was created


def test_the_odometer_refuses_fewer_charges_than_the_ledger_proves(tmp_path):
    path = tmp_path / "privacy.sqlite"
    plain = PrivacyOdometer(path)
    for _ in range(2):
        plain.charge("alice", "dataset:ab", "c1", poisson=(1.0, 0.1))
    plain.close()
    ok = PrivacyOdometer(path, floors=lambda: {("alice", "dataset:ab"): 2, ("alice", "dataset:cd"): 0})
    assert ok.composition("alice", "dataset:ab").steps == 2  # as many as proved, and a pool with none: fine
    ok.close()
    short = PrivacyOdometer(path, floors=lambda: {("alice", "dataset:ab"): 5})
    with pytest.raises(IntegrityError, match="fewer charges") as e:
        short.composition("alice", "dataset:ab")
    assert "restore" in str(e.value).lower() and "backup" in str(e.value)


def test_an_empty_file_in_place_of_the_odometer_is_refused(tmp_path):
    path = tmp_path / "privacy.sqlite"
    path.write_bytes(b"")
    odo = PrivacyOdometer(path, floors=lambda: {("alice", "dataset:ab"): 1})
    with pytest.raises(IntegrityError, match="fewer charges"):
        odo.pools("alice")
    assert path.stat().st_size == 0  # refused before the schema was written into it


def test_charges_never_lower_a_pools_count_and_pools_are_never_deleted(tmp_path):
    odo = PrivacyOdometer(tmp_path / "privacy.sqlite")
    odo.charge("alice", "dataset:ab", "c1", poisson=(1.0, 0.1))
    db = sqlite3.connect(tmp_path / "privacy.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="never"):
        db.execute("UPDATE pools SET version = 0")
    with pytest.raises(sqlite3.DatabaseError, match="never"):
        db.execute("DELETE FROM pools")
    db.close()


def test_the_ledger_floors_are_the_largest_count_each_pool_was_seen_with(tmp_path):
    path = tmp_path / "audit.sqlite"
    assert privacy_floors(path) == {}  # no ledger: nothing proved
    led = AuditLedger(path, tenant="alice")
    led.append("create_tenant", {}, summary={"tenant": "alice"})
    led.append("attach_dataset", {}, summary={"pool": "dataset:ab", "pool_charges": 0})
    led.append("optim_step", {}, summary={"step": 1, "pool": "dataset:ab", "pool_charges": 4})
    led.append("optim_step", {}, summary={"step": 2, "pool": "dataset:ab", "pool_charges": 3})  # another client
    led.append("attach_dataset", {}, summary={"pool": "dataset:cd", "dataset_epsilon": 0.5})  # older format
    led.append("optim_step", {}, summary={"step": 1})  # older format: proves no pool
    led.close()
    AuditLedger(path, tenant="bob").append("attach_dataset", {}, summary={"pool": "dataset:ab", "pool_charges": 1})
    assert privacy_floors(path) == {("alice", "dataset:ab"): 4, ("alice", "dataset:cd"): 1, ("bob", "dataset:ab"): 1}


def test_a_workspace_with_a_proved_pool_refuses_a_missing_odometer_and_a_new_one_does_not(tmp_path):
    ws = Workspace(tmp_path / "ws", passphrase="p")
    assert ws.odometer.pools("default") == []  # a brand-new workspace: created, no action needed
    ws.odometer.charge("default", "dataset:ab", "c1", poisson=(1.0, 0.1))
    ws.tenant("default").audit("optim_step", {"step": 1}, {"step": 1, "pool": "dataset:ab", "pool_charges": 1})
    ws.close()
    _remove_odometer(tmp_path / "ws")
    again = Workspace(tmp_path / "ws", passphrase="p")
    with pytest.raises(IntegrityError, match=r"privacy\.sqlite is missing"):
        _ = again.odometer
    assert not (tmp_path / "ws" / "privacy.sqlite").exists()


# -- through the public API ---------------------------------------------------------------------------
def test_deleting_the_odometer_does_not_reset_a_data_sets_budget(tiny_model, tmp_path):
    ws = tmp_path / "ws"
    _train(ws, tiny_model, 2)
    _remove_odometer(ws)
    svc = ServiceClient(ws, passphrase="p")
    with pytest.raises(IntegrityError, match=r"privacy\.sqlite is missing") as e:
        svc.privacy_budgets()
    assert "restore" in str(e.value).lower() and "backup" in str(e.value)
    with pytest.raises(IntegrityError, match=r"privacy\.sqlite"):
        svc.create_training_client(dp_config(tiny_model))
    assert not (ws / "privacy.sqlite").exists()


def test_an_empty_or_older_odometer_in_its_place_is_refused_and_the_current_one_restores(tiny_model, tmp_path):
    ws = tmp_path / "ws"
    _train(ws, tiny_model, 1)
    _copy_odometer(ws, tmp_path / "older.sqlite")
    eps = _train(ws, tiny_model, 2)
    _copy_odometer(ws, tmp_path / "current.sqlite")
    PrivacyOdometer(tmp_path / "empty.sqlite").pools("default")  # a valid, empty odometer
    for replacement in ("empty.sqlite", "older.sqlite"):
        _remove_odometer(ws)
        shutil.copy(tmp_path / replacement, ws / "privacy.sqlite")
        svc = ServiceClient(ws, passphrase="p")
        with pytest.raises(IntegrityError, match="fewer charges"):
            svc.create_training_client(dp_config(tiny_model))
        svc.workspace.close()
    _remove_odometer(ws)
    shutil.copy(tmp_path / "current.sqlite", ws / "privacy.sqlite")  # the backup: everything works again
    svc = ServiceClient(ws, passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model))
    tc.attach_dataset(RECORDS)
    assert tc.get_dp_metrics().dataset_steps == 3 and tc.get_dp_metrics().epsilon_spent == pytest.approx(eps)
    tc.close()


def test_deleting_the_odometer_under_a_running_client_stops_its_next_step(tiny_model, tmp_path):
    ws = tmp_path / "ws"
    svc = ServiceClient(ws, passphrase="p")
    tc = svc.create_training_client(dp_config(tiny_model))
    tc.attach_dataset(RECORDS)
    it = tc.poisson_batches(steps=3)
    tc.forward_backward(next(it))
    tc.optim_step().result()
    _remove_odometer(ws)
    with pytest.raises(IntegrityError, match=r"privacy\.sqlite"):
        tc.forward_backward(next(it)).result()
    tc.close()


# -- privacy_budgets lists a carried-over data set once -------------------------------------------------
def test_privacy_budgets_lists_a_carried_over_pool_once_under_its_live_name(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    cfg = dp_config(tiny_model)
    probe = svc.create_training_client(cfg)
    legacy = legacy_pool(probe, RECORDS)
    probe.close()
    for _ in range(3):
        svc.odometer.charge("default", legacy, "old-client", poisson=(1.0, cfg.batch_size / len(RECORDS)))
    tc = svc.create_training_client(cfg)
    tc.attach_dataset(RECORDS)
    live = tc.get_dp_metrics().pool
    tc.close()
    budgets = svc.privacy_budgets()
    assert [b["pool"] for b in budgets] == [live]
    assert budgets[0]["carried_over_from"] == [legacy] and sum(b["steps"] for b in budgets) == 3
