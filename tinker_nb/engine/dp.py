"""DP-SGD gradient side: per-example gradients, clipping, accumulation, noise.

Per-example gradients come from opacus's grad samplers through hooks attached in place (no wrapper:
:mod:`.per_sample`), so the peft model keeps ``generate`` and clean state-dict keys. We clip and sum
per-example gradients ourselves after every ``forward_backward`` so that several calls accumulate
into one logical step, and add Gaussian noise exactly once per ``optim_step``, normalised by the
public expected batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ClipStats", "GradientAccumulator"]


@dataclass
class ClipStats:
    """Per-call clipping statistics (not private: derived from raw per-example gradients)."""

    examples: int
    clipped: int
    norm_mean: float
    norm_max: float

    @property
    def clip_fraction(self) -> float:
        return self.clipped / self.examples if self.examples else 0.0


class GradientAccumulator:
    """Holds the running sum of (clipped) gradients of the trainable parameters for one logical step."""

    def __init__(self, model: torch.nn.Module, *, dp: bool, max_grad_norm: float | None) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise RuntimeError("model has no trainable parameters")
        self.dp = dp
        self.max_grad_norm = max_grad_norm
        self.sums = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        self.examples = 0
        self.calls = 0
        self.hooks = None
        if dp:
            from .per_sample import attach_per_sample_hooks

            # LoRA (all trainable layers nn.Linear): per-example gradients land in one flat buffer laid out
            # in self.params order; anything else: opacus's hooks and p.grad_sample.
            self.hooks = attach_per_sample_hooks(model, self.params)

    # -- per call -------------------------------------------------------------------------------
    def absorb(self, batch_size: int) -> ClipStats:
        """Move this backward pass's gradients into the running sum (clipping each example under DP)."""
        self.calls += 1
        if self.dp:
            stats = self._absorb_clipped(batch_size)
        else:
            for s, p in zip(self.sums, self.params):
                if p.grad is not None:
                    s.add_(p.grad.float())
                    p.grad = None
            stats = ClipStats(batch_size, 0, float("nan"), float("nan"))
        self.examples += batch_size
        return stats

    def _absorb_clipped(self, batch_size: int) -> ClipStats:
        C = self.max_grad_norm
        hooks = self.hooks
        if hooks is not None and hasattr(hooks, "clip_and_accumulate"):
            norms = hooks.clip_and_accumulate(C, self.sums)  # two whole-buffer ops, no per-parameter loop
            clipped, mean, top = torch.stack([(norms > C).sum().to(norms.dtype), norms.mean(), norms.max()]).tolist()
            return ClipStats(batch_size, int(clipped), mean, top)
        grads = []
        for p in self.params:
            gs = getattr(p, "grad_sample", None)
            if gs is None:
                raise RuntimeError("per-example gradient missing for a trainable parameter (per-sample hooks inactive)")
            grads.append(gs)
        norms = torch.stack([g.reshape(g.shape[0], -1).float().norm(2, dim=1) for g in grads], dim=1).norm(2, dim=1)
        factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for s, g, p in zip(self.sums, grads, self.params):
            s.add_(torch.einsum("i,i...->...", factor.to(g.dtype), g).float())
            p.grad_sample = None  # type: ignore[attr-defined]  # opacus's attribute
            p.grad = None
        clipped = int((norms > self.max_grad_norm).sum())
        return ClipStats(batch_size, clipped, float(norms.mean()), float(norms.max()))

    # -- per step -------------------------------------------------------------------------------
    def write_grads(self, *, noise_std: float, normaliser: float, noise: Any = None) -> None:
        """Set ``p.grad = (sum + N(0, noise_std^2)) / normaliser`` for every trainable parameter.

        ``noise`` is a :class:`~tinker_nb.engine.noise.GaussianNoise` (secret AES-CTR keystream); one call
        draws the noise of every parameter at once, in float32, on the parameters' device.
        """
        if noise_std > 0:
            if noise is None:
                raise RuntimeError("DP step without a noise source")
            total = sum(s.numel() for s in self.sums)
            dev = self.sums[0].device
            flat = noise.normal((total,), noise_std, device=dev, prefetch=dev.type != "cpu")
            offset = 0
            for s, p in zip(self.sums, self.params):
                n = s.numel()
                p.grad = ((s + flat[offset:offset + n].view_as(s)) / normaliser).to(p.dtype)
                offset += n
            return
        for s, p in zip(self.sums, self.params):
            p.grad = (s / normaliser).to(p.dtype)

    def reset(self) -> None:
        for s in self.sums:
            s.zero_()
        for p in self.params:
            p.grad = None
            if hasattr(p, "grad_sample"):
                p.grad_sample = None
        self.examples = 0
        self.calls = 0

    def snapshot(self) -> list[torch.Tensor]:
        return [s.clone() for s in self.sums]

    def close(self) -> None:
        """Remove the per-sample hooks (notebook re-runs would otherwise stack them)."""
        if self.hooks is not None:
            self.hooks.cleanup()
            self.hooks = None
