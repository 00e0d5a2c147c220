"""Configuration dataclasses: what to train, how, and under which privacy guarantee.

Torch-free so the CLI and verifier can read configs without importing the engine.
Every value is checked on construction; a bad value raises :class:`~tinker_nb.errors.ConfigError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["ACCOUNTANTS", "DEFAULT_MODEL_REF", "DPConfig", "LoRAConfig", "TrainingConfig"]

DEFAULT_MODEL_REF = "tinker-nb/tiny-llama"
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ACCOUNTANTS = ("prv", "pld", "rdp")


def _positive(name: str, value: Any, *, allow_zero: bool = False, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        want = "an integer" if integer else "a finite number"
        raise ConfigError(f"{name} must be {want}, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}, got {value!r}.")


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapter settings (peft). ``target_modules`` defaults to attention and MLP projections."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES

    def __post_init__(self) -> None:
        _positive("LoRAConfig.rank", self.rank, integer=True)
        _positive("LoRAConfig.alpha", self.alpha)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}.")
        mods = self.target_modules
        if isinstance(mods, str):
            mods = (mods,)
        mods = tuple(mods)
        if not mods or not all(isinstance(m, str) and m for m in mods):
            raise ConfigError("LoRAConfig.target_modules must be a non-empty list of module names, e.g. ['q_proj', 'v_proj'].")
        object.__setattr__(self, "target_modules", mods)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoRAConfig:
        return cls(**{**d, "target_modules": tuple(d.get("target_modules", DEFAULT_TARGET_MODULES))})


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings.

    Give ``noise_multiplier`` (σ) directly, or leave it ``None`` and give ``target_epsilon``: σ is then
    calibrated so that the planned epochs spend exactly the target. ``target_epsilon`` is also a hard
    budget: a step that would pass it is refused. Adjacency is add/remove one example.
    """

    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    target_epsilon: float | None = None
    target_delta: float = 1e-5
    accountant: str = "pld"

    def __post_init__(self) -> None:
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ConfigError("DPConfig needs noise_multiplier or target_epsilon (or both); "
                              "use dp_config=None to train without differential privacy.")
        if self.noise_multiplier is not None:
            _positive("DPConfig.noise_multiplier", self.noise_multiplier)
        _positive("DPConfig.max_grad_norm", self.max_grad_norm)
        if self.target_epsilon is not None:
            _positive("DPConfig.target_epsilon", self.target_epsilon)
        _positive("DPConfig.target_delta", self.target_delta)
        if self.target_delta >= 1:
            raise ConfigError(f"DPConfig.target_delta must be < 1, got {self.target_delta!r}.")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"DPConfig.accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DPConfig:
        return cls(**d)


@dataclass(frozen=True)
class TrainingConfig:
    """What a training client trains and how.

    ``batch_size`` is the *expected* logical batch size: Poisson sampling draws each example with
    probability ``batch_size / N``, and DP gradients are normalised by this public constant.
    ``epochs`` is the plan used to calibrate σ from ``target_epsilon``. ``tenant`` (optional) must be the
    ServiceClient's tenant when given. ``base_dtype`` is the dtype of the frozen base weights (``"bfloat16"``
    halves their memory on a GPU; ``"auto"`` = bf16 on CUDA): LoRA weights, per-example gradients,
    clipping, noise and the optimizer stay float32. ``micro_batch_size`` bounds how
    many examples go through the model at once (a draw is split into chunks that together are that draw,
    exactly once); it changes memory, never the mathematics of the step.
    """

    model_ref: str = DEFAULT_MODEL_REF
    lora_config: LoRAConfig = field(default_factory=LoRAConfig)
    dp_config: DPConfig | None = None
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_seq_len: int | None = None
    micro_batch_size: int | None = None
    seed: int = 0
    tenant: str | None = None
    device: str | None = None
    base_dtype: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_ref, str) or not self.model_ref:
            raise ConfigError("TrainingConfig.model_ref must be a model id or path, e.g. 'tinker-nb/tiny-llama'.")
        if not isinstance(self.lora_config, LoRAConfig):
            raise ConfigError("TrainingConfig.lora_config must be a LoRAConfig.")
        if self.dp_config is not None and not isinstance(self.dp_config, DPConfig):
            raise ConfigError("TrainingConfig.dp_config must be a DPConfig or None.")
        _positive("TrainingConfig.batch_size", self.batch_size, integer=True)
        _positive("TrainingConfig.learning_rate", self.learning_rate)
        _positive("TrainingConfig.weight_decay", self.weight_decay, allow_zero=True)
        _positive("TrainingConfig.epochs", self.epochs)
        if self.max_seq_len is not None:
            _positive("TrainingConfig.max_seq_len", self.max_seq_len, integer=True)
        if self.micro_batch_size is not None:
            _positive("TrainingConfig.micro_batch_size", self.micro_batch_size, integer=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"TrainingConfig.seed must be a non-negative integer, got {self.seed!r}.")
        if self.tenant is not None:
            from .workspace import validate_tenant

            validate_tenant(self.tenant)
        if self.base_dtype is not None and self.base_dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ConfigError(f"TrainingConfig.base_dtype must be 'float32', 'bfloat16', 'float16', 'auto' or None "
                              f"(None: $TINKER_NB_BASE_DTYPE or float32), got {self.base_dtype!r}.")
        if self.device is not None and not (self.device in ("cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ConfigError(f"TrainingConfig.device must be 'cpu', 'cuda', 'cuda:N' or None, got {self.device!r}.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora_config"] = self.lora_config.to_dict()
        d["dp_config"] = self.dp_config.to_dict() if self.dp_config else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingConfig:
        d = dict(d)
        d["lora_config"] = LoRAConfig.from_dict(d.get("lora_config") or {})
        d["dp_config"] = DPConfig.from_dict(d["dp_config"]) if d.get("dp_config") else None
        return cls(**d)
