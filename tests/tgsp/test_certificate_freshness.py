"""A package built later from a saved checkpoint states what the workspace knows about the data set *then*.

Before: the certificate was computed from the checkpoint's run record only, so packaging an earlier
checkpoint after other clients had trained on the same data (more DP steps, steps without DP, a fixed
noise seed) issued a certificate "counting every step any client took on this data set" that left them
out: a smaller ε, a finite ε for an unbounded data set, and accounting_valid for a broken one.
"""

from __future__ import annotations

import pytest

from tinker_nb import PackageError, ServiceClient, accounting
from tinker_nb.tgsp import inspect_package, package_checkpoint

from ..privacy.helpers import dp_config
from .helpers import RECORDS


def _train(svc, cfg, steps, **kw):
    tc = svc.create_training_client(cfg, **kw)
    tc.attach_dataset(RECORDS)
    done = 0
    for d in tc.poisson_batches(steps=steps * 4):
        if tc.forward_backward(d).result().examples or cfg.dp_config is not None:
            tc.optim_step().result()
            done += 1
        if done == steps:
            break
    return tc


def _recipient():
    from tinker_nb.security.kem import RecipientIdentity

    return RecipientIdentity.generate().public_key()


def test_a_later_package_of_a_checkpoint_counts_the_data_sets_later_steps(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    cfg = dp_config(tiny_model)
    first = _train(svc, cfg, 1)
    saved = first.save_state("one-step")
    first.close()
    _train(svc, cfg, 3).close()  # three more steps on the same records by another client
    package_checkpoint(svc, saved.artifact_id, tmp_path / "p.tgsp", recipients=[_recipient()])
    cert = inspect_package(tmp_path / "p.tgsp")["dp_certificate.json"]
    assert sum(n for _, _, n in cert["history"]) == 4
    q = cfg.batch_size / len(RECORDS)
    assert cert["epsilon"] == pytest.approx(accounting.report([(1.0, q, 4)], delta=1e-3).epsilon, rel=1e-6)


def test_a_checkpoint_of_a_data_set_later_trained_without_dp_gets_no_dp_certificate(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    first = _train(svc, dp_config(tiny_model), 1)
    saved = first.save_state("one-step")
    first.close()
    _train(svc, dp_config(tiny_model, dp_config=None), 1).close()
    with pytest.raises(PackageError, match="WITHOUT differential privacy"):
        package_checkpoint(svc, saved.artifact_id, tmp_path / "p.tgsp", recipients=[_recipient()])
    assert not (tmp_path / "p.tgsp").exists()


def test_a_checkpoint_of_a_data_set_later_trained_with_a_fixed_seed_is_not_valid(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    first = _train(svc, dp_config(tiny_model), 1)
    saved = first.save_state("one-step")
    first.close()
    _train(svc, dp_config(tiny_model), 1, noise_seed=5).close()
    package_checkpoint(svc, saved.artifact_id, tmp_path / "p.tgsp", recipients=[_recipient()])
    cert = inspect_package(tmp_path / "p.tgsp")["dp_certificate.json"]
    assert cert["accounting_valid"] is False and cert["noise_seed"].startswith("fixed")


def test_a_checkpoint_from_before_the_order_free_pools_counts_the_data_sets_later_steps(tiny_model, tmp_path):
    """A run record naming the old, order-sensitive pool reads the pool its charges were carried over to."""
    import json

    from tinker_nb.engine.data_source import dataset_digest

    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    cfg = dp_config(tiny_model)
    first = _train(svc, cfg, 1)
    examples = [first.session._encode_record(i, r) for i, r in enumerate(RECORDS)]
    blobs = first.run_record()
    first.close()
    legacy = f"dataset:{dataset_digest(examples)}"
    state = json.loads(blobs["state.json"])
    state["pool"] = legacy  # what a checkpoint saved before the change holds
    blobs["state.json"] = json.dumps(state).encode()
    old = svc.store.save("old-format", blobs, metadata={"kind": "training-state"},
                         public={"step": 1, "kind": "training-state"}, ledger=svc.ledger)
    q = cfg.batch_size / len(RECORDS)
    for _ in range(2):  # the old pool's own charges, carried over on the next attach
        svc.odometer.charge("default", legacy, "old-client", poisson=(1.0, q))
    _train(svc, cfg, 3).close()  # and three steps under the order-free name
    package_checkpoint(svc, old.artifact_id, tmp_path / "p.tgsp", recipients=[_recipient()])
    cert = inspect_package(tmp_path / "p.tgsp")["dp_certificate.json"]
    assert sum(n for _, _, n in cert["history"]) == 1 + 2 + 3
