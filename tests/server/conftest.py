"""Fixtures for the Training API server: a TestClient app with two tenants, and a real `tinker-nb serve`."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

# Tiny settings: the embedded model, LoRA rank 4, small batches, short sequences.
CONFIG = {"lora_config": {"rank": 4, "alpha": 8.0},
          "dp_config": {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "target_epsilon": 50.0, "target_delta": 1e-3,
                         "accountant": "rdp"},
          "batch_size": 4, "max_seq_len": 24}
RECORDS = [f"record {i}: the cat sat on the mat and the dog ran to the park" for i in range(40)]


def training_config():
    from tinker_nb import TrainingConfig

    return TrainingConfig.from_dict(CONFIG)


@pytest.fixture
def app_env(tmp_path):
    """(TestClient, {"alice": headers, "bob": headers}, app) over a fresh workspace (max 3 clients)."""
    from fastapi.testclient import TestClient

    from tinker_nb.server import create_app

    app = create_app(tmp_path / "ws", max_clients=3, max_body_mb=1.0)
    st = app.state.tinker
    heads = {}
    for t in ("alice", "bob"):
        key, _ = st.apikeys.create(t)
        heads[t] = {"Authorization": f"Bearer {key}"}
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, heads, app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(root_key: str) -> dict:
    env = dict(os.environ)
    env["TINKER_NB_ROOT_KEY"] = root_key
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def cli(env: dict, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tinker_nb.cli", *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def create_key(env: dict, workspace: Path, tenant: str) -> dict:
    return json.loads(cli(env, "apikey", "create", "--workspace", str(workspace), "--tenant", tenant, "--json"))


class LiveServer:
    """`tinker-nb serve` on 127.0.0.1 and a free port; stop() always kills it.

    Its log goes to a file beside the workspace (a pipe nobody reads would fill and stall the server).
    """

    def __init__(self, workspace: Path, env: dict, *extra: str) -> None:
        self.workspace, self.env, self.extra = workspace, env, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url
        self.log_path = workspace.parent / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> LiveServer:
        import httpx

        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tinker_nb.cli", "serve", "--workspace",
                                      str(self.workspace), "--host", "127.0.0.1", "--port", str(self.port),
                                      *self.extra],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start in time")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()
        if self.proc is not None:
            self._log.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real server with tenants alice and bob (module-scoped: one start for the module's tests)."""
    ws = tmp_path_factory.mktemp("served") / "ws"
    env = server_env(secrets.token_hex(32))
    keys = {t: create_key(env, ws, t) for t in ("alice", "bob")}
    srv = LiveServer(ws, env, "--max-clients", "12")
    srv.start()
    try:
        yield srv, keys
    finally:
        srv.stop()
