"""Without DP an empty Poisson draw has nothing to step on: the next draw must still be usable.

Before: the empty draw's pending step stayed open (optim_step refuses an empty non-DP step), so the next
forward_backward raised StateError — the privacy audit's non-DP baseline crashed on the first empty draw.
"""

from __future__ import annotations

import pytest

from tinker_nb import LoRAConfig, ServiceClient, StateError, TrainingConfig

RECORDS = [f"record {i}: the patient in bed {i % 9} reports symptom {i % 5}" for i in range(40)]


def test_a_non_dp_loop_goes_on_after_an_empty_draw(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(TrainingConfig(
        model_ref=tiny_model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj")),
        dp_config=None, batch_size=1, learning_rate=1e-2))
    tc.attach_dataset(RECORDS)
    empty = steps = 0
    for d in tc.poisson_batches(steps=30):  # q = 1/40: about a third of the draws are empty
        if tc.forward_backward(d).result().examples == 0:
            empty += 1
            with pytest.raises(StateError, match="nothing accumulated"):
                tc.optim_step().result()
            continue
        tc.optim_step().result()
        steps += 1
    assert empty and steps and tc.get_dp_metrics().steps == steps
    assert tc.get_dp_metrics().epsilon_spent == float("inf")
    tc.close()
