"""Property test: random sequences of public calls never make the data set's ε go down, never count a
draw twice, and ``accounting_valid`` is true only when every step came from a library draw used once."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TinkerError, TrainingConfig

RECORDS = [f"note {i}: the patient reports symptom {i % 4}" for i in range(24)]
OPS = ["attach", "draw_step", "fb_draw", "fb_same_draw", "fb_own", "optim", "save", "load", "new_client", "close",
       "new_loop"]


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.sampled_from(OPS), min_size=3, max_size=14))
def test_public_calls_never_lower_epsilon_nor_reuse_draws(model, tmp_path_factory, ops):
    ws = tmp_path_factory.mktemp("ws")
    cfg = TrainingConfig(model_ref=model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj",)),
                         dp_config=DPConfig(noise_multiplier=1.2, target_epsilon=50.0, target_delta=1e-3),
                         batch_size=4, learning_rate=1e-2)
    svc = ServiceClient(ws, passphrase="p")
    tc = svc.create_training_client(cfg)
    attached = False
    loop = None
    last_draw = None
    saved = []
    used_draws = 0  # forward_backward(draw) calls that succeeded
    eps_seen = 0.0
    pool = None
    for op in ops:
        try:
            if op == "attach":
                info = tc.attach_dataset(RECORDS)
                attached, pool = True, info["pool"]
                loop = None
            elif op in ("draw_step", "fb_draw") and attached:
                if loop is None:
                    loop = iter(tc.poisson_batches(steps=50))
                last_draw = next(loop)
                tc.forward_backward(last_draw).result()
                used_draws += 1
                if op == "draw_step":
                    tc.optim_step().result()
            elif op == "fb_same_draw" and last_draw is not None:
                tc.forward_backward(last_draw).result()
                used_draws += 1  # must never happen: the call above has to be refused
            elif op == "fb_own":
                tc.forward_backward(RECORDS[:2]).result()
            elif op == "optim":
                tc.optim_step().result()
            elif op == "save":
                saved.append(tc.save_state().artifact_id)
            elif op == "load" and saved:
                tc.load_state(saved[-1])
            elif op == "new_client" or op == "close":
                tc.close()
                tc = svc.create_training_client(cfg)
                attached, loop, last_draw = False, None, None
            elif op == "new_loop" and attached:
                loop = iter(tc.poisson_batches(steps=50))
        except (TinkerError, StopIteration):
            pass
        if pool is not None:
            comp = svc.odometer.composition("default", pool)
            # every successful draw is charged exactly once
            assert comp.steps == used_draws
            eps = comp.report(delta=1e-3).epsilon if not comp.empty else 0.0
            assert eps >= eps_seen - 1e-12
            eps_seen = eps
        if not tc.closed:
            m = tc.get_dp_metrics()
            if m.accounting_valid:
                assert m.caller_supplied_mu2 == 0 and m.sampling in ("poisson", "none")
    tc.close()
