"""Our per-example gradients and clipped sums equal opacus's (GradSampleHooks + DPOptimizer), and fall back to it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tinker_nb.engine.dp import GradientAccumulator
from tinker_nb.engine.per_sample import LinearPerExampleGrads, attach_per_sample_hooks, ghost_norm_saves_memory
from tinker_nb.engine.session import TrainingSession

from .helpers import config


def _loss(model, ids, mask):
    logits = model(input_ids=ids, attention_mask=mask).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                             reduction="sum")


def _batch(vocab: int, b: int = 5, t: int = 11):
    torch.manual_seed(0)
    ids = torch.randint(3, vocab, (b, t))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return ids, mask


def _opacus_reference(model, params, ids, mask, clip):
    """opacus 1.6 end to end: GradSampleHooks for p.grad_sample, DPOptimizer.clip_and_accumulate for the sum."""
    from opacus.grad_sample import GradSampleHooks
    from opacus.optimizers import DPOptimizer

    hooks = GradSampleHooks(model, batch_first=True, loss_reduction="sum")
    opt = DPOptimizer(torch.optim.SGD(params, lr=0.1), noise_multiplier=0.0, max_grad_norm=clip,
                      expected_batch_size=ids.shape[0], loss_reduction="sum")
    _loss(model, ids, mask).backward()
    samples = [p.grad_sample.detach().clone() for p in params]
    opt.clip_and_accumulate()
    sums = [p.summed_grad.detach().clone() for p in params]
    opt.zero_grad(set_to_none=True)
    for p in params:
        p.grad, p.grad_sample, p.summed_grad = None, None, None
    hooks.cleanup()
    return samples, sums


@pytest.fixture
def lora_session(tiny_model):
    from tinker_nb.config import LoRAConfig

    lora = LoRAConfig(rank=2, alpha=4, dropout=0.0, target_modules=("q_proj", "v_proj", "down_proj"))
    s = TrainingSession(config(tiny_model, lora_config=lora))  # non-DP: the session attaches no hooks
    yield s
    s.close()


@pytest.mark.parametrize("clip", [1e-3, 0.5, 1e3])  # all clipped / some / none
def test_clipped_sum_equals_opacus_reference(lora_session, clip):
    s = lora_session
    ids, mask = _batch(s.vocab_size)
    params = [p for p in s.model.parameters() if p.requires_grad]
    ref_samples, ref_sums = _opacus_reference(s.model, params, ids, mask, clip)

    acc = GradientAccumulator(s.model, dp=True, max_grad_norm=clip)
    assert isinstance(acc.hooks, LinearPerExampleGrads)
    _loss(s.model, ids, mask).backward()
    assert all(p.grad is None for p in params)  # no batch-gradient GEMM spent under DP
    stats = acc.absorb(ids.shape[0])
    assert len(acc.sums) == len(ref_sums) == 12  # (q, v, down) x (A, B) x 2 layers
    for a, r in zip(acc.sums, ref_sums):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-7)
    ref_norms = torch.stack([g.reshape(5, -1).norm(dim=1) for g in ref_samples], 1).norm(dim=1)
    assert stats.clipped == int((ref_norms > clip).sum())
    assert stats.norm_max == pytest.approx(float(ref_norms.max()), rel=1e-5)
    acc.close()


def test_per_example_grads_equal_opacus_grad_samples(lora_session):
    s = lora_session
    ids, mask = _batch(s.vocab_size)
    params = [p for p in s.model.parameters() if p.requires_grad]
    ref_samples, _ = _opacus_reference(s.model, params, ids, mask, 1.0)
    ours = attach_per_sample_hooks(s.model, params)
    _loss(s.model, ids, mask).backward()
    got = ours.per_example_grads()
    for a, r in zip(got, ref_samples):
        assert a.shape == r.shape and a.shape[0] == 5
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-7)
    ours.cleanup()
    # cleanup restores the layers' own forward: plain autograd gradients again
    _loss(s.model, ids, mask).backward()
    assert all(p.grad is not None for p in params)


@pytest.mark.parametrize("d_in,d_out", [(6, 4), (3, 7)])  # stored as g^T a / transposed (a^T g)
def test_two_passes_accumulate_and_a_smaller_last_chunk(d_in, d_out):
    torch.manual_seed(1)
    lin = nn.Linear(d_in, d_out)
    acc = GradientAccumulator(lin, dp=True, max_grad_norm=0.3)
    x1, x2 = torch.randn(5, 3, d_in), torch.randn(2, 3, d_in)
    expected = [torch.zeros_like(p) for p in acc.params]
    for x in (x1, x2):
        acc.hooks.disable_hooks()
        for i in range(x.shape[0]):
            grads = torch.autograd.grad(lin(x[i:i + 1]).pow(2).sum(), acc.params)
            norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
            for e, g in zip(expected, grads):
                e.add_(g * min(1.0, 0.3 / (float(norm) + 1e-6)))
        acc.hooks.enable_hooks()
        lin(x).pow(2).sum().backward()
        acc.absorb(x.shape[0])
    for a, e in zip(acc.sums, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    assert acc.examples == 7 and acc.calls == 2
    acc.close()


def test_an_abandoned_backward_pass_never_leaks_into_the_next_step():
    torch.manual_seed(3)
    lin1, lin2 = nn.Linear(5, 4), nn.Linear(4, 3)
    model = nn.Sequential(lin1, nn.Tanh(), lin2)
    acc = GradientAccumulator(model, dp=True, max_grad_norm=1e3)
    x_old, x_new = torch.randn(4, 2, 5), torch.randn(4, 2, 5)  # same batch size: the dangerous case

    class Interrupt(Exception):
        pass

    def boom(grad):  # lin2's per-example gradients are recorded, then the pass dies before lin1's
        raise Interrupt

    h = model[1].register_full_backward_pre_hook(lambda m, g: boom(g))
    with pytest.raises(Interrupt):
        model(x_old).pow(2).sum().backward()
    h.remove()
    model(x_new).pow(2).sum().backward()  # the next step's pass
    acc.absorb(4)
    acc.hooks.disable_hooks()
    ref = torch.autograd.grad(model(x_new).pow(2).sum(), acc.params)  # no clipping at C = 1e3
    for a, r in zip(acc.sums, ref):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)
    acc.close()


def test_2d_inputs_and_a_layer_called_twice_sum_both_calls():
    lin = nn.Linear(3, 2, bias=True)
    h = LinearPerExampleGrads(lin)
    x1, x2 = torch.randn(4, 3), torch.randn(4, 3)
    (lin(x1).sum() + 2 * lin(x2).sum()).backward()
    w, b = h.per_example_grads()
    expected = torch.einsum("no,ni->noi", torch.ones(4, 2), x1) + torch.einsum("no,ni->noi", 2 * torch.ones(4, 2), x2)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(b, torch.full((4, 2), 3.0))
    h.cleanup()


def test_disabled_hooks_record_nothing_and_cleanup_restores_forward():
    lin = nn.Linear(4, 3)
    h = LinearPerExampleGrads(lin)
    h.disable_hooks()
    lin(torch.randn(2, 4)).sum().backward()
    assert lin.weight.grad is not None  # plain autograd while disabled (generation, reference loops)
    with pytest.raises(RuntimeError, match="per-example gradients missing"):
        h.per_example_grads()
    lin.weight.grad = lin.bias.grad = None
    h.enable_hooks()
    lin(torch.randn(2, 4)).sum().backward()
    assert lin.weight.grad is None and h.per_example_grads()[0].shape == (2, 3, 4)
    with torch.no_grad():
        lin(torch.randn(2, 4))  # no graph: plain forward, nothing recorded
    h.cleanup()
    assert "forward" not in lin.__dict__
    lin(torch.randn(2, 4)).sum().backward()
    assert lin.weight.grad is not None


def test_bf16_activations_record_fp32_per_example_grads():
    torch.manual_seed(2)
    lin = nn.Linear(8, 4, bias=False).to(torch.bfloat16)
    h = LinearPerExampleGrads(lin)
    x = torch.randn(3, 5, 8, dtype=torch.bfloat16)
    lin(x).float().pow(2).sum().backward()
    (g,) = h.per_example_grads()
    assert g.dtype == torch.float32
    h.disable_hooks()
    for i in range(3):
        (ref,) = torch.autograd.grad(lin(x[i:i + 1]).float().pow(2).sum(), [lin.weight])
        torch.testing.assert_close(g[i], ref.float(), rtol=2e-2, atol=2e-2)
    h.cleanup()


def test_ghost_norms_save_memory_only_for_large_layers_or_short_sequences():
    # LoRA A (r x d) and B (d x r) at r=8, d=256: above T=32 the per-example gradient is the smaller one
    assert not ghost_norm_saves_memory(seq_len=64, d_in=256, d_out=8)
    assert not ghost_norm_saves_memory(seq_len=1024, d_in=8, d_out=4096)
    # a full 4096x4096 projection at 128 tokens: the two Gram matrices are far smaller than its gradient
    assert ghost_norm_saves_memory(seq_len=128, d_in=4096, d_out=4096)


def test_other_trainable_layers_fall_back_to_opacus_hooks():
    from opacus.grad_sample import GradSampleHooks

    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    h = attach_per_sample_hooks(model)
    assert isinstance(h, GradSampleHooks)
    h.cleanup()
