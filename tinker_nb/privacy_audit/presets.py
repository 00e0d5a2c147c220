"""The settings of notebooks/05_privacy_audit.ipynb and of the bench-full privacy-audit section (one source)."""

from __future__ import annotations

from typing import Any

__all__ = ["notebook_config", "notebook_settings"]


def notebook_settings(fast: bool) -> dict[str, Any]:
    """Data size, canaries and training of the notebook's two runs (non-DP and DP at ε = 8, same data, same steps).

    Small data and many passes over the canaries, so the non-DP run memorises them (the audit's power check).
    The full settings train both runs for the same epochs; the fast ones give the (slower per step) DP run a
    sixth of the non-DP run's epochs to stay within the notebook time budget.
    """
    if fast:
        return dict(dataset_size=8, n_canaries=64, canary_length=32, batch_size=16, learning_rate=4e-3, rank=8,
                    epochs=24.0, dp_epochs=4.0, target_epsilon=8.0, delta=1e-5)
    # More canaries memorise less per canary with a rank-8 adapter on the tiny model (measured, non-DP, 95%:
    # 256 canaries / 64 records / batch 32 / 20 epochs gave 0.83, AUC 0.72; 128 / 16 / 16 / 24 gave 1.91, AUC 0.91).
    return dict(dataset_size=16, n_canaries=128, canary_length=32, batch_size=16, learning_rate=4e-3, rank=8,
                epochs=24.0, dp_epochs=24.0, target_epsilon=8.0, delta=1e-5)


def notebook_config(settings: dict[str, Any], *, dp: bool):
    """The TrainingConfig of one of the notebook's runs."""
    from ..config import DPConfig, LoRAConfig, TrainingConfig

    s = settings
    dp_cfg = DPConfig(target_epsilon=s["target_epsilon"], target_delta=s["delta"], max_grad_norm=1.0) if dp else None
    return TrainingConfig(model_ref="tinker-nb/tiny-llama", lora_config=LoRAConfig(rank=s["rank"], alpha=2 * s["rank"]),
                          dp_config=dp_cfg, batch_size=s["batch_size"], learning_rate=s["learning_rate"],
                          epochs=s["dp_epochs"] if dp else s["epochs"])
