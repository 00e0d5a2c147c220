"""REST routes through FastAPI's TestClient: auth, tenancy, errors, futures, idempotency, admission, faults."""

from __future__ import annotations

import json

import pytest

from .conftest import CONFIG, RECORDS

API = "/api/v1"


def create(c, h, config=CONFIG):
    r = c.post(f"{API}/training_clients", json={"config": config}, headers=h)
    assert r.status_code == 201, r.text
    return r.json()["training_client_id"]


def attach(c, h, cid, records=RECORDS):
    r = c.post(f"{API}/training_clients/{cid}/dataset?wait=60", json={"records": records}, headers=h)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def draws(c, h, cid, steps):
    it = c.post(f"{API}/training_clients/{cid}/draws", json={"steps": steps}, headers=h).json()["iterator_id"]
    out = []
    while True:
        d = c.post(f"{API}/training_clients/{cid}/draws/{it}/next", headers=h).json()
        if d["done"]:
            return out
        out.append(d["draw_id"])


def step(c, h, cid, draw_id, key=None):
    hh = dict(h, **({"Idempotency-Key": key + "-fb"} if key else {}))
    r1 = c.post(f"{API}/training_clients/{cid}/forward_backward", json={"draw_id": draw_id}, headers=hh)
    hh = dict(h, **({"Idempotency-Key": key + "-opt"} if key else {}))
    r2 = c.post(f"{API}/training_clients/{cid}/optim_step", headers=hh)
    return r1, r2


def err(r):
    body = r.json()
    assert set(body) >= {"error"}, body
    assert set(body["error"]) >= {"type", "message"}
    assert "Traceback" not in r.text
    return body["error"]["type"]


def test_health_and_schema(app_env):
    c, _, _ = app_env
    assert c.get("/healthz").json()["status"] == "ok"
    schema = c.get("/openapi.json").json()
    paths = schema["paths"]
    for p in ("/api/v1/training_clients", "/api/v1/training_clients/{client_id}",
              "/api/v1/training_clients/{client_id}/forward_backward",
              "/api/v1/training_clients/{client_id}/optim_step",
              "/api/v1/training_clients/{client_id}/save_state", "/api/v1/training_clients/{client_id}/load_state",
              "/api/v1/futures/{future_id}", "/api/v1/training_clients/{client_id}/events"):
        assert p in paths, p


def test_authentication(app_env):
    c, heads, app = app_env
    assert c.get(f"{API}/whoami").status_code == 401
    assert err(c.get(f"{API}/whoami")) == "AuthenticationError"
    assert c.get(f"{API}/whoami", headers={"Authorization": "Bearer tml-nope"}).status_code == 401
    assert c.get(f"{API}/whoami", headers={"X-API-Key": "not-a-key"}).status_code == 401
    key = heads["alice"]["Authorization"].split()[1]
    assert c.get(f"{API}/whoami", headers={"X-API-Key": key}).json()["tenant"] == "alice"
    assert c.get(f"{API}/whoami", headers=heads["bob"]).json()["tenant"] == "bob"
    st = app.state.tinker
    info = st.apikeys.authenticate(key)
    st.apikeys.revoke(info.key_id)
    r = c.get(f"{API}/whoami", headers=heads["alice"])
    assert r.status_code == 401 and r.headers.get("www-authenticate")
    # the key itself is not in the database, only its keyed hash
    assert key.encode() not in st.apikeys.path.read_bytes()


def test_bad_input_is_4xx_json(app_env):
    c, heads, _ = app_env
    h = heads["alice"]
    r = c.post(f"{API}/training_clients", content=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 422 and err(r) == "ConfigError"
    r = c.post(f"{API}/training_clients", json={"config": {"batch_size": "many"}}, headers=h)
    assert r.status_code == 422 and err(r) == "ConfigError"
    r = c.post(f"{API}/training_clients", json={"config": {"nope": 1}}, headers=h)
    assert r.status_code == 422 and err(r) == "ConfigError"
    r = c.post(f"{API}/training_clients", json={"config": {"model_ref": "/etc"}}, headers=h)
    assert r.status_code == 422 and "not served" in r.json()["error"]["message"]
    r = c.post(f"{API}/training_clients", json={"config": {"lora_config": {"rank": 4096}}}, headers=h)
    assert r.status_code == 422
    assert c.get(f"{API}/training_clients/tc_nope", headers=h).status_code == 404
    assert err(c.get(f"{API}/futures/fut_nope", headers=h)) == "NotFoundError"
    assert c.get("/no/such/route").status_code == 404
    r = c.post(f"{API}/datasets", json={"records": ["x" * 1000] * 2000}, headers=h)  # > 1 MiB limit
    assert r.status_code == 413 and err(r) == "DataError"
    r = c.put(f"{API}/training_clients", headers=h)
    assert r.status_code == 405 and err(r) == "ConfigError"


def test_dp_run_tenancy_idempotency_and_order(app_env):
    c, heads, _ = app_env
    a, b = heads["alice"], heads["bob"]
    cid = create(c, a)
    info = attach(c, a, cid)
    assert info["records"] == len(RECORDS) and "dataset_id" in info
    ids = draws(c, a, cid, 3)
    assert len(ids) == 3 and len(set(ids)) == 3
    # bob sees none of alice's resources
    assert c.get(f"{API}/training_clients/{cid}", headers=b).status_code == 404
    r = c.post(f"{API}/training_clients/{cid}/forward_backward", json={"draw_id": ids[0]}, headers=b)
    assert r.status_code == 404
    assert c.get(f"{API}/training_clients", headers=b).json() == []
    # step 1 and step 2, the second one sent twice with the same idempotency keys
    r1, r2 = step(c, a, cid, ids[0])
    assert r1.status_code == 202 and r2.status_code == 202
    r1, r2 = step(c, a, cid, ids[1], key="k2")
    again1, again2 = step(c, a, cid, ids[1], key="k2")
    assert again1.json()["future_id"] == r1.json()["future_id"] and again2.json()["future_id"] == r2.json()["future_id"]
    assert again2.headers.get("idempotent-replayed") == "true"
    # the same key for another request is refused
    r = c.post(f"{API}/training_clients/{cid}/optim_step", json={"learning_rate": 0.5},
               headers={**a, "Idempotency-Key": "k2-opt"})
    assert r.status_code == 422
    fut = c.get(f"{API}/futures/{r2.json()['future_id']}?wait=60", headers=a).json()
    assert fut["status"] == "done" and fut["result"]["step"] == 2
    assert c.get(f"{API}/futures/{r2.json()['future_id']}", headers=b).status_code == 404
    m = c.get(f"{API}/training_clients/{cid}/dp_metrics", headers=a).json()
    assert m["steps"] == 2 and m["accounting_valid"] is True and m["sampling"] == "poisson"
    # a draw is used once
    r = c.post(f"{API}/training_clients/{cid}/forward_backward", json={"draw_id": ids[0]}, headers=a)
    assert r.status_code == 422 and err(r) == "DataError"
    # lazy draw ids "<iterator_id>:<k>": the k-th draw, taken in order when its step runs
    it = c.post(f"{API}/training_clients/{cid}/draws", json={"steps": 2}, headers=a).json()["iterator_id"]
    fb = f"{API}/training_clients/{cid}/forward_backward"
    assert c.post(fb + "?wait=60", json={"draw_id": f"{it}:1"}, headers=a).status_code == 200
    assert c.post(f"{API}/training_clients/{cid}/optim_step?wait=60", headers=a).json()["result"]["step"] == 3
    r = c.post(fb, json={"draw_id": f"{it}:1"}, headers=a)
    assert r.status_code == 422 and err(r) == "DataError"
    for bad in (f"{it}:3", f"{it}:0", "it_0000:1"):
        assert c.post(fb, json={"draw_id": bad}, headers=a).status_code == 404, bad
    assert c.post(fb, json={"draw_id": f"{it}:2"}, headers=b).status_code == 404
    # checkpoints: alice's only
    s = c.post(f"{API}/training_clients/{cid}/save_state?wait=60", json={"name": "two"}, headers=a).json()
    aid = s["result"]["artifact_id"]
    assert [x["artifact_id"] for x in c.get(f"{API}/checkpoints", headers=a).json()] == [aid]
    assert c.get(f"{API}/checkpoints", headers=b).json() == []
    bid = create(c, b)
    r = c.post(f"{API}/training_clients/{bid}/load_state?wait=60", json={"artifact_id": aid}, headers=b)
    assert r.status_code == 404
    r = c.post(f"{API}/training_clients/{cid}/load_state?wait=60", json={"artifact_id": aid}, headers=a)
    assert r.status_code == 200 and r.json()["result"]["step"] == 3
    # audit: bob's ledger holds none of alice's entries; alice's verifies
    ops = [e["operation"] for e in c.get(f"{API}/audit/entries", headers=a).json()["entries"]]
    assert ops.count("optim_step") == 3
    assert "optim_step" not in [e["operation"] for e in c.get(f"{API}/audit/entries", headers=b).json()["entries"]]
    assert c.post(f"{API}/audit/verify", headers=a).json()["ok"] is True
    # events: replay from the start after close (the stream ends)
    assert c.post(f"{API}/training_clients/{cid}/close?wait=60", headers=a).json()["status"] == "done"
    with c.stream("GET", f"{API}/training_clients/{cid}/events?after=0", headers=a) as r:
        text = "".join(r.iter_text())
    kinds = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("event:")]
    assert kinds.count("step") == 3 and kinds[-1] == "end" and "save" in kinds
    assert c.post(f"{API}/training_clients/{cid}/optim_step", headers=a).status_code == 409


def test_admission_and_failure_isolation(app_env):
    c, heads, app = app_env
    a, b = heads["alice"], heads["bob"]
    plain = {**CONFIG, "dp_config": None}  # caller-supplied batches, no data set needed
    ids = [create(c, a, plain), create(c, b, plain), create(c, b, plain)]
    r = c.post(f"{API}/training_clients", json={"config": CONFIG}, headers=a)
    assert r.status_code == 429 and r.headers["retry-after"] and err(r) == "ServerBusyError"
    # an internal error (a bug, an OOM) in one client ends that client only
    runner = app.state.tinker.clients[ids[0]]

    def boom(*a, **k):
        raise MemoryError("simulated out of memory")

    runner.tc.forward_backward = boom
    r = c.post(f"{API}/training_clients/{ids[0]}/forward_backward?wait=30", json={"batch": ["hello world"]}, headers=a)
    assert r.status_code == 409 and err(r) == "StateError" and "internal error" in r.json()["error"]["message"]
    assert c.get(f"{API}/training_clients/{ids[0]}", headers=a).json()["status"] == "failed"
    assert c.post(f"{API}/training_clients/{ids[0]}/optim_step", headers=a).status_code == 409
    # the others go on, and the slot is free again
    r = c.post(f"{API}/training_clients/{ids[1]}/forward_backward?wait=60", json={"batch": ["hello world"]}, headers=b)
    assert r.status_code == 200, r.text
    assert c.post(f"{API}/training_clients/{ids[1]}/optim_step?wait=60", headers=b).status_code == 200
    create(c, a, plain)


def test_errors_keep_their_type_and_skip_later_steps(app_env):
    c, heads, _ = app_env
    a = heads["alice"]
    cfg = json.loads(json.dumps(CONFIG))
    cfg["dp_config"] = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "target_epsilon": 1.2, "target_delta": 1e-3}
    cid = create(c, a, cfg)
    attach(c, a, cid)
    refused = None
    it = c.post(f"{API}/training_clients/{cid}/draws", json={"steps": 60}, headers=a).json()["iterator_id"]
    for _ in range(60):  # draw, train, step until the budget refuses (at the draw or at the step)
        r = c.post(f"{API}/training_clients/{cid}/draws/{it}/next", headers=a)
        if r.status_code == 200:
            r = c.post(f"{API}/training_clients/{cid}/forward_backward?wait=60",
                       json={"draw_id": r.json()["draw_id"]}, headers=a)
        if r.status_code == 200:
            r = c.post(f"{API}/training_clients/{cid}/optim_step?wait=60", headers=a)
        if r.status_code != 200:
            refused = r
            break
    assert refused is not None and refused.status_code == 409, refused and refused.text
    assert err(refused) == "BudgetExceededError", refused.text
    m = c.get(f"{API}/training_clients/{cid}/dp_metrics", headers=a).json()
    assert m["epsilon_spent"] <= 1.2
    # a caller-supplied batch with a bad token id: DataError (4xx), the client stays usable
    r = c.post(f"{API}/training_clients/{cid}/forward_backward?wait=60", json={"batch": {"input_ids": [[10 ** 9]]}},
               headers=a)
    assert r.status_code == 422 and err(r) == "DataError"
    assert c.get(f"{API}/training_clients/{cid}", headers=a).json()["status"] == "open"


def test_create_app_takes_a_workspace_object(tmp_path):
    from fastapi.testclient import TestClient

    workspace = pytest.importorskip("tinker_nb.workspace")
    from tinker_nb.server import create_app

    ws = workspace.Workspace(tmp_path / "wsobj")
    app = create_app(ws, max_clients=1)
    key, info = app.state.tinker.apikeys.create("carol")
    with TestClient(app) as c:
        h = {"X-API-Key": key}
        assert c.get(f"{API}/whoami", headers=h).json() == {"tenant": "carol", "key_id": info.key_id}
        assert c.get(f"{API}/checkpoints", headers=h).json() == []
        assert c.get(f"{API}/publisher_key", headers=h).json()["key_id"]
        assert c.get(f"{API}/audit/state", headers=h).status_code == 200


def test_apikey_cli(tmp_path, capsys):
    from tinker_nb.cli import main

    ws = str(tmp_path / "ws")
    assert main(["apikey", "create", "--workspace", ws, "--tenant", "dora", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert set(made) == {"api_key", "tenant", "key_id"} and made["api_key"].startswith("tml-")
    assert main(["apikey", "list", "--workspace", ws, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["key_id"] for k in listed] == [made["key_id"]] and made["api_key"] not in json.dumps(listed)
    assert main(["apikey", "revoke", made["key_id"], "--workspace", ws]) == 0
    capsys.readouterr()
    assert main(["apikey", "list", "--workspace", ws, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked"] is not None
    assert main(["apikey", "create", "--workspace", ws, "--tenant", "bad name!"]) == 2
    assert main(["apikey", "revoke", "nope", "--workspace", ws]) != 0
    assert made["api_key"].encode() not in (tmp_path / "ws" / "apikeys.sqlite").read_bytes()


def test_remote_classes_override_every_public_method():
    """The remote client never falls through to an in-kernel method (which would touch a local engine)."""
    from tinker_nb.client import ServiceClient, TrainingClient
    from tinker_nb.remote.client import RemoteServiceClient, RemoteTrainingClient

    inherited_ok = {"__enter__", "__exit__", "__new__"}
    for base, sub in ((ServiceClient, RemoteServiceClient), (TrainingClient, RemoteTrainingClient)):
        names = [n for n, v in vars(base).items() if (callable(v) or isinstance(v, (property, staticmethod,
                 classmethod))) and (not n.startswith("__") or n in ("__init__", "__repr__", "__del__"))]
        missing = [n for n in names if (n not in vars(sub) and n not in inherited_ok and not n.startswith("_"))
                   or (n in ("__init__", "__repr__", "__del__") and n not in vars(sub))]
        assert not missing, f"{sub.__name__} does not override {missing}"
