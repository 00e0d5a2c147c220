from __future__ import annotations

import pytest

from tinker_nb import ConfigError, DPConfig, LoRAConfig, TrainingConfig


@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=-3), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(learning_rate=0), "learning_rate"),
    (dict(seed=-1), "seed"),
    (dict(tenant="a/b"), "tenant"),
    (dict(device="tpu"), "device"),
    (dict(model_ref=""), "model_ref"),
    (dict(max_seq_len=0), "max_seq_len"),
])
def test_training_config_rejects(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainingConfig(**kw)


@pytest.mark.parametrize("kw,match", [
    (dict(noise_multiplier=-1.0), "noise_multiplier"),
    (dict(noise_multiplier=0.0), "noise_multiplier"),
    (dict(noise_multiplier=1.0, max_grad_norm=0), "max_grad_norm"),
    (dict(noise_multiplier=1.0, target_delta=1.0), "target_delta"),
    (dict(noise_multiplier=1.0, accountant="gdp"), "accountant"),
    (dict(), "noise_multiplier or target_epsilon"),
    (dict(target_epsilon=float("nan")), "target_epsilon"),
])
def test_dp_config_rejects(kw, match):
    with pytest.raises(ConfigError, match=match):
        DPConfig(**kw)


@pytest.mark.parametrize("kw", [dict(rank=0), dict(alpha=-1), dict(dropout=1.0), dict(target_modules=[])])
def test_lora_config_rejects(kw):
    with pytest.raises(ConfigError):
        LoRAConfig(**kw)


def test_round_trip_dict():
    c = TrainingConfig(dp_config=DPConfig(target_epsilon=3.0), lora_config=LoRAConfig(rank=4, target_modules=["q_proj"]))
    assert TrainingConfig.from_dict(c.to_dict()) == c
