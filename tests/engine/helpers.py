from __future__ import annotations

from tinker_nb.config import DPConfig, LoRAConfig, TrainingConfig

RECORDS = [
    "the cat sat on the mat",
    "patient reports mild headache",
    "the dog ran to the park and the cat sat",
    "a small bird sang in the old tree",
    "the printer on floor two is broken",
] * 8


def config(model: str, *, dp: DPConfig | None = None, batch_size: int = 4, **kw) -> TrainingConfig:
    kw.setdefault("lora_config", LoRAConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj")))
    return TrainingConfig(model_ref=model, dp_config=dp, batch_size=batch_size, learning_rate=1e-2, **kw)


def dp(**kw) -> DPConfig:
    base = dict(noise_multiplier=1.0, max_grad_norm=1.0, target_epsilon=50.0, target_delta=1e-3)
    base.update(kw)
    return DPConfig(**base)
