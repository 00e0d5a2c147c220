"""The server and `tinker-nb serve` refuse a lost privacy.sqlite: at start (exit 1) and per request (a JSON 409)."""

from __future__ import annotations

import pytest

from tinker_nb import IntegrityError
from tinker_nb.cli import EXIT_VERIFY, main
from tinker_nb.workspace import Workspace

API = "/api/v1"


def _workspace_with_a_proved_charge(path):
    ws = Workspace(path)
    ws.odometer.charge("alice", "dataset:ab", "c1", poisson=(1.0, 0.1))
    ws.tenant("alice").audit("optim_step", {"step": 1}, {"step": 1, "pool": "dataset:ab", "pool_charges": 1})
    ws.close()
    for suffix in ("", "-wal", "-shm"):
        (path / f"privacy.sqlite{suffix}").unlink(missing_ok=True)


def test_the_server_does_not_start_on_a_workspace_whose_odometer_is_gone(tmp_path, monkeypatch, capsys):
    from tinker_nb.server import create_app

    _workspace_with_a_proved_charge(tmp_path / "ws")
    with pytest.raises(IntegrityError, match=r"privacy\.sqlite is missing"):
        create_app(tmp_path / "ws")
    uvicorn = pytest.importorskip("uvicorn")

    def never(*a, **k):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", never)
    assert main(["serve", "--workspace", str(tmp_path / "ws")]) == EXIT_VERIFY
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "IntegrityError" in err and "privacy.sqlite is missing" in err, err
    assert "backup" in err and not (tmp_path / "ws" / "privacy.sqlite").exists()


def test_a_running_server_answers_a_deleted_odometer_with_a_json_error(app_env, tmp_path):
    c, heads, _app = app_env
    r = c.get(f"{API}/privacy_budgets", headers=heads["alice"])
    assert r.status_code == 200 and r.json() == []
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "ws" / f"privacy.sqlite{suffix}").unlink(missing_ok=True)
    r = c.get(f"{API}/privacy_budgets", headers=heads["alice"])
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["type"] == "IntegrityError" and "privacy.sqlite" in err["message"] and "backup" in err["message"]
