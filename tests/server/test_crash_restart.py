"""kill -9 of the server in the middle of training, then a restart on the same workspace."""

from __future__ import annotations

import secrets

import pytest

from .conftest import RECORDS, LiveServer, create_key, server_env, training_config

pytestmark = pytest.mark.slow


def test_kill9_mid_training_and_restart(tmp_path):
    from tinker_nb.remote import RemoteServiceClient
    from tinker_nb.remote.client import ServerUnavailableError

    ws = tmp_path / "ws"
    env = server_env(secrets.token_hex(32))
    key = create_key(env, ws, "alice")["api_key"]
    srv = LiveServer(ws, env).start()
    try:
        svc = RemoteServiceClient(base_url=srv.base_url, api_key=key, retries=0, busy_timeout=0)
        publisher = svc.publisher_key()
        tc = svc.create_training_client(training_config())
        dataset_id = tc.attach_dataset(RECORDS)["dataset_id"]
        for b in tc.poisson_batches(steps=2):
            tc.forward_backward(b)
            tc.optim_step()
        saved = tc.save_state("before-crash")
        eps_before = tc.get_dp_metrics().epsilon_spent
        draws = tc.poisson_batches(steps=20)
        for b in draws:  # keep training, and kill the server while steps are queued or running
            tc.forward_backward(b)
            tc.optim_step()
            if b.index == 2:
                break
        srv.kill9()
        with pytest.raises(ServerUnavailableError):
            tc.get_dp_metrics()
        svc.close()

        srv = LiveServer(ws, env).start()  # same workspace, same root key, a new port
        svc = RemoteServiceClient(base_url=srv.base_url, api_key=key, busy_timeout=0)
        led = svc.ledger
        assert led.verify().ok, led.last_verification
        assert led.verify_locally(publisher).ok, led.last_verification
        ops = [e.operation for e in led.entries()]
        assert ops.count("optim_step") >= 2  # the steps before the crash are all there
        assert saved.artifact_id in {c["artifact_id"] for c in svc.list_checkpoints()}
        assert dataset_id in {d["dataset_id"] for d in svc.list_datasets()}  # records kept encrypted on the server
        # resume: a new client on the stored data set, from the last checkpoint
        tc2 = svc.create_training_client(training_config())
        tc2.attach_dataset(dataset_id=dataset_id)
        assert tc2.load_state(saved.artifact_id)["artifact_id"] == saved.artifact_id
        for b in tc2.poisson_batches(steps=1):
            tc2.forward_backward(b).result()
            tc2.optim_step().result()
        m = tc2.get_dp_metrics().to_dict()
        # the privacy odometer never goes back: a data-set-wide figure, where reported, covers the earlier steps
        for k, v in m.items():
            if "epsilon" in k and ("dataset" in k or "total" in k) and isinstance(v, float):
                assert v >= eps_before - 1e-9, (k, v, eps_before)
        assert led.verify().ok
        tc2.close()
        svc.close()
    finally:
        srv.stop()
