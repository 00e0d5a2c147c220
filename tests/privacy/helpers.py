"""What the privacy tests (and tgsp's certificate-freshness tests) share: records, one small DP run, a step."""

from __future__ import annotations

from typing import Any

from tinker_nb import DPConfig, LoRAConfig, TrainingConfig

RECORDS = [f"record {i}: the patient in bed {i % 9} reports symptom {i % 5}" for i in range(40)]


def dp_config(model: str, **kw: Any) -> TrainingConfig:
    """A small DP run (rank 2 on q/v, σ=1, C=1, ε ≤ 30 at δ=1e-3, batch 4); ``kw`` overrides any field."""
    base: dict[str, Any] = dict(
        model_ref=model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj")),
        dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_epsilon=30.0, target_delta=1e-3),
        batch_size=4, learning_rate=1e-2)
    base.update(kw)
    return TrainingConfig(**base)


def step(tc: Any, batch: Any) -> Any:
    """One training step on ``batch`` (a draw or your own batch); its optim_step result."""
    tc.forward_backward(batch)
    return tc.optim_step().result()


def legacy_pool(tc: Any, records: list[str]) -> str:
    """The order-sensitive pool name ``records`` had before pools were named by an order-free digest."""
    from tinker_nb.engine.data_source import dataset_digest

    examples = [tc.session._encode_record(i, r) for i, r in enumerate(records)]
    return f"dataset:{dataset_digest(examples)}"
