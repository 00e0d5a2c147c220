"""attach_dataset(..., charge_also=...) over HTTP: a superset run charges the subset's own budget on the server."""

from __future__ import annotations

import httpx
import pytest

from .conftest import RECORDS, training_config

CANARIES = [f"canary {i}: zebra quartz {i * 7919 % 1000} violet" for i in range(8)]


def test_remote_charge_also_charges_the_subsets_own_pool(live):
    from tinker_nb import DataError
    from tinker_nb.remote import RemoteServiceClient

    srv, keys = live
    svc = RemoteServiceClient(base_url=srv.base_url, api_key=keys["alice"]["api_key"])
    data = RECORDS[:30]
    audit = svc.create_training_client(training_config())
    info = audit.attach_dataset(data + CANARIES, charge_also=data)
    assert info["also_charged"] == 1
    draws = audit.poisson_batches(steps=2)
    for d in draws:
        audit.forward_backward(d)
        audit.optim_step()
    assert audit.get_dp_metrics().steps == 2
    audit.close()

    own = svc.create_training_client(training_config())
    own.attach_dataset(data)  # the data's own pool: it holds the superset run's two steps
    m = own.get_dp_metrics()
    assert m.dataset_steps == 2 and m.epsilon_spent > 0 and m.accounting_valid
    own.close()

    # Several collections, one of them uploaded earlier and attached by id, work the same way.
    up = svc.upload_dataset(data + CANARIES)
    two = svc.create_training_client(training_config())
    assert two.attach_dataset(dataset_id=up["dataset_id"], charge_also=[data[:10], data[10:]])["also_charged"] == 2
    two.close()

    # Bad values: records that are not part of the attached ones are refused, and nothing is attached.
    bad = svc.create_training_client(training_config())
    with pytest.raises(DataError, match="charge_also"):
        bad.attach_dataset(data, charge_also=["not one of the attached records"])
    bad.attach_dataset(data)  # the refused call changed nothing: the client can still attach
    bad.close()

    # Malformed bodies answer 422 in the usual error shape.
    api = httpx.Client(base_url=srv.base_url + "/api/v1",
                       headers={"Authorization": f"Bearer {keys['alice']['api_key']}"}, timeout=60)
    cid = api.post("/training_clients", json={"config": training_config().to_dict()}).json()["training_client_id"]
    for charge_also in ([], [[]], "text", [["ok"], 3]):
        r = api.post(f"/training_clients/{cid}/dataset", json={"records": data, "charge_also": charge_also})
        assert r.status_code == 422, (charge_also, r.text)
        assert "error" in r.json()
    api.post(f"/training_clients/{cid}/close", params={"wait": 30})
    api.close()
    svc.close()
