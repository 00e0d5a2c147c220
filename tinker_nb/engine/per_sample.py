"""Per-example gradients of the trainable ``nn.Linear`` layers (LoRA A/B) with light hooks.

Opacus's ``GradSampleHooks`` registers *full* module backward hooks, which wrap every hooked module's
inputs and outputs in ``BackwardHookFunction`` nodes; on a small model that bookkeeping is ~10% of a
training step. A LoRA adapter only trains ``nn.Linear`` layers, so here a forward hook keeps the
layer's input and registers a plain tensor hook on its output; when autograd delivers the output's
gradient, opacus's own grad sampler for ``nn.Linear`` (``compute_linear_grad_sample``, the same
einsum opacus runs) turns (activations, backprops) into ``p.grad_sample``. The math is opacus's; only
the hook plumbing is ours. Models with other trainable layer types use opacus's hooks unchanged
(:func:`attach_per_sample_hooks`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["LinearPerSampleHooks", "attach_per_sample_hooks"]


def _trainable_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]


class LinearPerSampleHooks:
    """Writes ``p.grad_sample`` (batch-first, loss reduction "sum") for every trainable ``nn.Linear``."""

    def __init__(self, model: nn.Module) -> None:
        from opacus.grad_sample.linear import compute_linear_grad_sample

        self._sampler = compute_linear_grad_sample
        self.modules = _trainable_modules(model)
        bad = [type(m).__name__ for m in self.modules if type(m) is not nn.Linear]
        if bad:
            raise TypeError(f"LinearPerSampleHooks handles nn.Linear only, got {sorted(set(bad))}")
        self.enabled = True
        self._handles = [m.register_forward_hook(self._forward_hook) for m in self.modules]

    def _forward_hook(self, module: nn.Linear, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        if not self.enabled or not torch.is_grad_enabled() or not output.requires_grad:
            return
        activations = inputs[0].detach()

        def on_grad(backprops: torch.Tensor) -> None:
            for p, gs in self._sampler(module, [activations], backprops.detach()).items():
                prev = getattr(p, "grad_sample", None)
                # A layer called twice in one forward pass contributes the sum of both calls.
                p.grad_sample = gs if prev is None else prev + gs

        output.register_hook(on_grad)

    def disable_hooks(self) -> None:
        self.enabled = False

    def enable_hooks(self) -> None:
        self.enabled = True

    def cleanup(self) -> None:
        """Remove the hooks and any per-example gradients left on the parameters."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for m in self.modules:
            for p in m.parameters(recurse=False):
                if hasattr(p, "grad_sample"):
                    del p.grad_sample


def attach_per_sample_hooks(model: nn.Module) -> Any:
    """Light hooks when every trainable layer is ``nn.Linear`` (LoRA on projections), else opacus's hooks.

    Both expose ``enable_hooks``, ``disable_hooks`` and ``cleanup`` and fill ``p.grad_sample``.
    """
    if all(type(m) is nn.Linear for m in _trainable_modules(model)):
        return LinearPerSampleHooks(model)
    from opacus.grad_sample import GradSampleHooks

    return GradSampleHooks(model, batch_first=True, loss_reduction="sum", strict=True)
