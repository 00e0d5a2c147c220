"""Per-example gradients of the trainable ``nn.Linear`` layers (LoRA A/B), clipped and summed in place.

A LoRA adapter trains only ``nn.Linear`` layers. For such a layer with input activations ``a``
(B, T, d_in) and output gradients ``g`` (B, T, d_out), example i's weight gradient is
``g_i^T a_i`` (d_out × d_in). Opacus computes it in a module backward hook *in addition to* the
batch gradient autograd computes anyway, and then the clipped sum needs one more pass per parameter.

Here each trainable ``nn.Linear`` runs through one autograd function (:class:`_PerExampleLinear`)
whose backward

- computes the input gradient as usual (``g @ W``),
- writes the per-example weight (and bias) gradients straight into one flat buffer of shape
  (B, P) — P = number of trainable parameters — with a single batched GEMM per layer (for LoRA B,
  d_out > d_in, as the transpose ``a_i^T g_i``: on CPU a GEMM whose output rows are r = 8 numbers
  long runs 3-4× slower than the same GEMM producing long rows — autograd's own batch gradient of
  LoRA B pays that), and
- returns *no* weight gradient, so autograd never spends the batch-gradient GEMM that DP-SGD would
  throw away.

Clipping is then two whole-buffer operations (per-example norms over the rows, and the clipped sum
as one (B)·(B, P) product) instead of two small operations per parameter.

Per layer there is a choice between this (instantiation) and ghost clipping (norms from the T×T
Gram matrices ``a_i a_i^T`` and ``g_i g_i^T``). Counted in multiply-adds per example, instantiation is
T·d_in·d_out for the per-example GEMM plus d_in·d_out for its share of the clipped-sum GEMV; ghost is
T²·(d_in + d_out) for the Gram matrices plus T·d_in·d_out for the clipped-sum GEMM it still needs. So
ghost clipping never saves arithmetic; it saves *memory* where a layer's per-example gradient
(d_in·d_out numbers) is larger than its two Gram matrices (2T²) — fastDP's rule, stated by
:func:`ghost_norm_saves_memory`. For LoRA, d_in·d_out = r·d is small (2,048 numbers at r = 8,
d = 256; the whole buffer of the embedded model is 8 × 156,160 floats, 5 MB), so every layer is
instantiated. Models with other trainable layer types fall back to opacus's ``GradSampleHooks``
(:func:`attach_per_sample_hooks`), whose per-example gradients land in ``p.grad_sample``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LinearPerExampleGrads", "LinearPerSampleHooks", "attach_per_sample_hooks", "ghost_norm_saves_memory"]


def _trainable_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]


def ghost_norm_saves_memory(*, seq_len: int, d_in: int, d_out: int) -> bool:
    """True when a layer's two T×T Gram matrices (ghost norm) hold fewer numbers than its per-example gradient.

    fastDP's rule ``2T² < d_in·d_out``. Ghost norms never save multiply-adds (the clipped sum still
    needs the batch GEMM); they only trade the B·d_in·d_out per-example buffer for B·2T² Gram entries.
    """
    return 2 * seq_len * seq_len < d_in * d_out


class _PerExampleLinear(torch.autograd.Function):
    """``F.linear`` whose backward records per-example parameter gradients instead of batch ones."""

    @staticmethod
    def forward(ctx, x, weight, bias, slot):
        ctx.save_for_backward(x, weight)
        ctx.slot = slot
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_out.matmul(weight.to(grad_out.dtype)) if ctx.needs_input_grad[0] else None
        ctx.slot.owner._record(ctx.slot, x, grad_out)
        # No weight/bias gradient: DP-SGD uses only the clipped per-example sum recorded above.
        return grad_x, None, None, None


class _Slot:
    __slots__ = ("b_off", "b_size", "index", "module", "owner", "transposed", "w_off", "w_shape")

    def __init__(self, owner, module, index):
        self.owner, self.module, self.index = owner, module, index
        self.w_off = self.b_off = None
        self.w_shape = tuple(module.weight.shape)
        self.b_size = 0
        # Where d_out > d_in (LoRA B: d_out = d, d_in = r) the per-example gradient is computed and
        # stored transposed, a_i^T g_i (d_in × d_out): a GEMM whose output rows are long runs 3-4×
        # faster on CPU than g_i^T a_i, whose rows are r numbers long.
        self.transposed = self.w_shape[0] > self.w_shape[1]


class LinearPerExampleGrads:
    """Per-example gradients of every trainable ``nn.Linear`` in a flat (B, P) buffer, and their clipped sum.

    ``params`` (default: the model's trainable parameters in ``model.parameters()`` order) fixes the
    column layout of the buffer, so :meth:`clip_and_accumulate` can add into a matching list of sums.
    The hooks act only while enabled and while autograd records; ``disable_hooks`` (generation) and
    ``cleanup`` restore the layers' own ``forward``.
    """

    def __init__(self, model: nn.Module, params: list[torch.nn.Parameter] | None = None) -> None:
        found = _trainable_modules(model)
        bad = [type(m).__name__ for m in found if type(m) is not nn.Linear]
        if bad:
            raise TypeError(f"LinearPerExampleGrads handles nn.Linear only, got {sorted(set(bad))}")
        self.modules: list[nn.Linear] = [m for m in found if isinstance(m, nn.Linear)]
        self.params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
        offsets, off = {}, 0
        for p in self.params:
            offsets[id(p)] = off
            off += p.numel()
        self.numel = off
        self.sizes = [p.numel() for p in self.params]
        self.slots: list[_Slot] = []
        for m in self.modules:
            s = _Slot(self, m, len(self.slots))
            if m.weight.requires_grad:
                s.w_off = offsets[id(m.weight)]
            if m.bias is not None and m.bias.requires_grad:
                s.b_off, s.b_size = offsets[id(m.bias)], m.bias.numel()
            self.slots.append(s)
            m.forward = partial(self._forward, s)  # type: ignore[method-assign]  # this instance only
        covered = sum(int(s.w_off is not None) * m.weight.numel() + s.b_size for s, m in zip(self.slots, self.modules))
        if covered != self.numel:
            raise TypeError("some trainable parameters are not weights or biases of a trainable nn.Linear")
        stored_t = {id(m.weight) for s, m in zip(self.slots, self.modules) if s.w_off is not None and s.transposed}
        # per parameter: True when its columns in the buffer hold the transposed gradient
        self.transposed = [id(p) in stored_t for p in self.params]
        self.enabled = True
        self._buf: torch.Tensor | None = None
        self._batch = 0
        self._written: set[int] = set()

    # -- forward / backward ---------------------------------------------------------------------
    def _forward(self, slot: _Slot, x: torch.Tensor) -> torch.Tensor:
        m = slot.module
        if self.enabled and torch.is_grad_enabled():
            if self._written and torch._C._current_graph_task_id() == -1:
                # A new forward pass (not a recomputation inside a backward) while an earlier backward's
                # per-example gradients were never consumed: that pass was abandoned (an exception or an
                # interrupt mid-backward). Its rows belong to other examples; adding them to this pass's
                # rows would put two examples in one clipped vector, so they are dropped.
                self._written = set()
            return _PerExampleLinear.apply(x, m.weight, m.bias, slot)
        return F.linear(x, m.weight, m.bias)

    def _buffer(self, batch: int, device: torch.device) -> torch.Tensor:
        buf = self._buf
        if buf is None or buf.shape[0] != batch or buf.device != device:
            if self._written:
                raise RuntimeError("per-example gradients of one backward pass mix batch sizes")
            buf = self._buf = torch.empty(batch, self.numel, dtype=torch.float32, device=device)
        return buf

    def _record(self, slot: _Slot, x: torch.Tensor, grad_out: torch.Tensor) -> None:
        batch = x.shape[0]
        buf = self._buffer(batch, x.device)
        a = x.reshape(batch, -1, x.shape[-1])
        g = grad_out.reshape(batch, -1, grad_out.shape[-1])
        if a.dtype != torch.float32:
            a = a.float()
        if g.dtype != torch.float32:
            g = g.float()
        again = slot.index in self._written  # a layer called twice in one forward pass: sum both calls
        if slot.w_off is not None:
            o, i = slot.w_shape
            if slot.transposed:  # a_i^T g_i, (d_in, d_out)
                view = buf[:, slot.w_off: slot.w_off + o * i].view(batch, i, o)
                lhs, rhs = a.transpose(1, 2), g
            else:  # g_i^T a_i, (d_out, d_in)
                view = buf[:, slot.w_off: slot.w_off + o * i].view(batch, o, i)
                lhs, rhs = g.transpose(1, 2), a
            if again:
                view.baddbmm_(lhs, rhs)
            else:
                torch.bmm(lhs, rhs, out=view)
        if slot.b_off is not None:
            view = buf[:, slot.b_off: slot.b_off + slot.b_size]
            if again:
                view.add_(g.sum(1))
            else:
                torch.sum(g, dim=1, out=view)
        self._written.add(slot.index)
        self._batch = batch

    # -- consuming one backward pass ------------------------------------------------------------
    def _take(self) -> torch.Tensor:
        if not self._written or self._buf is None:
            raise RuntimeError("per-example gradients missing (per-sample hooks inactive during the backward pass)")
        buf = self._buf
        for s in self.slots:  # a layer that took no part in this pass has zero per-example gradient
            if s.index not in self._written:
                if s.w_off is not None:
                    buf[:, s.w_off: s.w_off + s.w_shape[0] * s.w_shape[1]].zero_()
                if s.b_off is not None:
                    buf[:, s.b_off: s.b_off + s.b_size].zero_()
        self._written = set()
        # Dropped once consumed: kept across steps it would sit on top of the next forward pass's
        # activations (the step's memory peak); allocated afresh at the next backward instead.
        self._buf = None
        return buf

    def per_example_grads(self) -> list[torch.Tensor]:
        """Views (B, *p.shape) of this pass's per-example gradients, one per parameter (consumes the pass)."""
        buf = self._take()
        n = buf.shape[0]
        return [c.reshape(n, p.shape[1], p.shape[0]).transpose(1, 2) if t else c.reshape(n, *p.shape)
                for c, p, t in zip(buf.split(self.sizes, dim=1), self.params, self.transposed)]

    def clip_and_accumulate(self, max_grad_norm: float, sums: list[torch.Tensor]) -> torch.Tensor:
        """Add ``sum_i min(1, C/‖g_i‖) g_i`` into ``sums`` (one tensor per parameter); return the norms ‖g_i‖."""
        buf = self._take()
        norms = torch.linalg.vector_norm(buf, dim=1)
        factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        clipped = factor @ buf
        for s, c, t in zip(sums, clipped.split(self.sizes), self.transposed):
            s.add_(c.view(s.shape[1], s.shape[0]).t() if t else c.view(s.shape))
        return norms

    # -- lifecycle ------------------------------------------------------------------------------
    def disable_hooks(self) -> None:
        self.enabled = False

    def enable_hooks(self) -> None:
        self.enabled = True

    def cleanup(self) -> None:
        """Give every layer its own ``forward`` back and drop the buffer."""
        for m in self.modules:
            if "forward" in m.__dict__:
                del m.forward
        self.modules, self.slots = [], []
        self._buf, self._written = None, set()


# The previous name (hooks that filled ``p.grad_sample``) stays importable.
LinearPerSampleHooks = LinearPerExampleGrads


def attach_per_sample_hooks(model: nn.Module, params: list[torch.nn.Parameter] | None = None) -> Any:
    """:class:`LinearPerExampleGrads` when every trainable layer is ``nn.Linear`` (LoRA), else opacus's hooks.

    Both expose ``enable_hooks``, ``disable_hooks`` and ``cleanup``. Opacus's hooks fill ``p.grad_sample``;
    ours expose ``clip_and_accumulate`` and ``per_example_grads``.
    """
    if all(type(m) is nn.Linear for m in _trainable_modules(model)):
        return LinearPerExampleGrads(model, params)
    from opacus.grad_sample import GradSampleHooks

    return GradSampleHooks(model, batch_first=True, loss_reduction="sum", strict=True)
