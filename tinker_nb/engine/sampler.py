"""Poisson subsampling owned by the library: each example joins a step independently with rate q."""

from __future__ import annotations

import torch

from ..errors import ConfigError

__all__ = ["PoissonSampler"]


class PoissonSampler:
    """Draws index sets ``{i : U_i < q}`` for a data set of size ``n``.

    The generator is seeded from the OS by default (the draw must stay secret for the privacy
    analysis); its state is saved in checkpoints so a resumed run draws the same next batch.
    """

    def __init__(self, n: int, sample_rate: float, *, seed: int) -> None:
        if n < 1:
            raise ConfigError("the data set is empty; attach at least one record.")
        if not 0 < sample_rate <= 1:
            raise ConfigError(f"sample rate {sample_rate!r} must be in (0, 1]; batch_size must be <= dataset size.")
        self.n = n
        self.sample_rate = float(sample_rate)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.draws = 0

    def draw(self) -> list[int]:
        """One Poisson draw: a (possibly empty) sorted list of indices."""
        mask = torch.rand(self.n, generator=self.generator) < self.sample_rate
        self.draws += 1
        return mask.nonzero().flatten().tolist()

    def state_dict(self) -> dict:
        return {"n": self.n, "sample_rate": self.sample_rate, "draws": self.draws,
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if int(state["n"]) != self.n:
            raise ConfigError(f"checkpoint was taken with a data set of {state['n']} records, this one has {self.n}; "
                              "attach the same data set before load_state.")
        self.draws = int(state["draws"])
        self.generator.set_state(state["rng"])
