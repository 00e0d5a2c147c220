"""A real `tinker-nb serve` with the Tinker routes, driven by the official SDK (tinker==0.38.*).

One server for the package's tests (module scope per test module), on 127.0.0.1 and a free port, over a
temporary workspace with a DP policy file: tenants ``alice`` and ``bob`` (DP, roomy budget), ``tight``
(a budget that admits one participation per record), ``plain`` (DP off) and ``carol`` (retry tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
tinker = pytest.importorskip("tinker")

from tests.server.conftest import LiveServer, create_key, server_env  # noqa: E402

os.environ.setdefault("TINKER_TELEMETRY", "0")  # the SDK sends telemetry to base_url only; none at all here

BASE_MODEL = "tinker-nb/tiny-llama"
TENANTS = ("alice", "bob", "tight", "plain", "carol")
POLICY = {
    "default": {"dp": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0, "target_delta": 1e-5,
                "target_epsilon": 50.0, "batch_size": 8, "accountant": "pld"},
    # μ = √k/σ: one participation (k=1, ε≈4.4 at δ=1e-5) fits, a second one (ε≈6.6) does not
    "tenants": {"tight": {"target_epsilon": 5.0}, "plain": {"dp": False}},
}


class Server(LiveServer):
    """`tinker-nb serve` with room for 16 clients; ``base_url`` is where the SDK finds the Tinker routes."""

    def __init__(self, workspace: Path, env: dict, *extra: str) -> None:
        super().__init__(workspace, env, "--max-clients", "16", *extra)
        self.base_url = self.url + "/tinker"


@pytest.fixture(scope="package")
def served(tmp_path_factory, tiny_model):
    """(Server, {tenant: api_key}) with the policy above; the server is stopped afterwards.

    It serves the embedded model and, as a local folder, the session's tiny test model (``srv.local_model``).
    """
    ws = tmp_path_factory.mktemp("tinker_compat") / "ws"
    env = server_env(secrets.token_hex(32))
    env["TINKER_TELEMETRY"] = "0"
    keys = {t: create_key(env, ws, t)["api_key"] for t in TENANTS}
    (ws / "tinker_policy.json").write_text(json.dumps(POLICY))
    srv = Server(ws, env, "--allow-model", BASE_MODEL, "--allow-model", tiny_model).start()
    srv.local_model = tiny_model
    try:
        yield srv, keys
    finally:
        srv.stop()


@pytest.fixture
def service(served):
    """A factory of SDK ServiceClients (closed at the end of the test): service(tenant)."""
    srv, keys = served
    made = []

    def make(tenant: str = "alice"):
        sc = tinker.ServiceClient(base_url=srv.base_url, api_key=keys[tenant])
        made.append(sc)
        return sc

    yield make
    for sc in made:
        with contextlib.suppress(Exception):
            sc.close("success").result(timeout=30)


def resolved(x):
    """The SDK returns futures of clients in 0.38 (and clients in older versions)."""
    from tinker.lib.public_interfaces.backcompat_client_future import BackcompatClientFuture

    return x.result() if isinstance(x, BackcompatClientFuture) else x


def datum(tok, text: str, *, mask_prompt: int = 0):
    """A supervised Datum as the cookbook builds it: input tokens[:-1], targets tokens[1:], 0/1 weights."""
    from tinker import types

    ids = tok.encode(text)
    w = [0.0 if i < mask_prompt else 1.0 for i in range(len(ids) - 1)]
    return types.Datum(model_input=types.ModelInput.from_ints(ids[:-1]),
                       loss_fn_inputs={"target_tokens": ids[1:], "weights": w})


def audit_ops(srv: Server, key: str) -> list[str]:
    import httpx

    r = httpx.get(srv.url + "/api/v1/audit/entries", headers={"X-API-Key": key}, params={"limit": 10000},
                  timeout=30)
    r.raise_for_status()
    return [e.get("operation") for e in r.json()["entries"]]
