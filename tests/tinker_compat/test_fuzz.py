"""Garbage at every Tinker route (in-process app, no model loads): never a 5xx, errors in the app's shape."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tinker")
pytest.importorskip("fastapi")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROUTES = ["client/config", "client/dynamic_config", "create_session", "session_heartbeat", "telemetry",
          "create_model", "get_info", "forward_backward", "optim_step", "save_weights", "save_weights_for_sampler",
          "load_weights", "create_sampling_session", "asample", "retrieve_future", "sessions/x/finish"]

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["session_id", "model_id", "seq_id", "request_id", "base_model",
                                                "model_seq_id", "path", "lora_config", "adam_params", "prompt",
                                                "sampling_params", "num_samples", "reason", "x"]), inner, max_size=4),
                           max_leaves=8)


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    from fastapi.testclient import TestClient

    from tinker_nb.server import create_app

    d = tmp_path_factory.mktemp("fuzz")
    app = create_app(d / "ws", key_file=d / "root.key", max_clients=1, max_body_mb=0.25)
    key, _ = app.state.tinker.apikeys.create("fuzzer")
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, {"X-API-Key": key}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(route=st.sampled_from(ROUTES), body=json_values | st.binary(max_size=64))
def test_no_server_errors(app_client, route, body):
    c, headers = app_client
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = c.post("/tinker/api/v1/" + route, content=content, headers=headers)
    assert r.status_code < 500, (route, body, r.status_code, r.text[:300])
    if r.status_code >= 400 and r.status_code not in (408, 410):
        assert isinstance(r.json().get("error", {}).get("type"), str), r.text[:300]
    elif r.status_code == 200 and isinstance(r.json(), dict) and "request_id" in r.json():
        f = c.post("/tinker/api/v1/retrieve_future", json={"request_id": r.json()["request_id"]}, headers=headers)
        assert f.status_code in (200, 408), f.text[:300]
    assert c.post("/tinker/api/v1/" + route, content=content).status_code == 401
