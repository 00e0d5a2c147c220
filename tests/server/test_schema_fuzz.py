"""Schema fuzzing with schemathesis against /openapi.json (in-process ASGI, bounded examples): no 5xx."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

pytestmark = pytest.mark.slow

_TMP = Path(tempfile.mkdtemp(prefix="tinker-fuzz-"))


def _app():
    from tinker_nb.server import create_app

    # One client slot: fuzzed creations past the first answer 429 instead of loading more models.
    app = create_app(_TMP / "ws", key_file=_TMP / "root.key", max_clients=1, max_body_mb=0.25)
    key, _ = app.state.tinker.apikeys.create("fuzzer")
    return app, {"Authorization": f"Bearer {key}"}


APP, HEADERS = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    APP.state.tinker.shutdown()
    shutil.rmtree(_TMP, ignore_errors=True)


# This face's REST API; the Tinker-compatible face (/tinker, its own issue) is fuzzed by its own tests.
@schema.include(path_regex=r"^/(api/v1/|healthz)").exclude(path_regex=r".*/events$").parametrize()
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case):
    for auth in (HEADERS, {}):
        response = case.call(headers={**(case.headers or {}), **auth})
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
        if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
            body = response.json()
            assert isinstance(body.get("error", {}).get("type"), str), body
