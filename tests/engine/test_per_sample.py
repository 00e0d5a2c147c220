"""The light per-example hooks give exactly what opacus's GradSampleHooks give, and fall back to them."""

from __future__ import annotations

import torch
from torch import nn

from tinker_nb.engine.per_sample import LinearPerSampleHooks, attach_per_sample_hooks
from tinker_nb.engine.session import TrainingSession

from .helpers import config


def _grad_samples(model, hooks, ids, mask) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    logits = model(input_ids=ids, attention_mask=mask).logits
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                      reduction="sum").backward()
    out = [p.grad_sample.detach().clone() for p in params]
    for p in params:
        p.grad, p.grad_sample = None, None
    hooks.cleanup()
    return out


def test_light_hooks_equal_opacus_hooks_on_a_lora_model(tiny_model):
    from opacus.grad_sample import GradSampleHooks

    from tinker_nb.config import LoRAConfig

    lora = LoRAConfig(rank=2, alpha=4, dropout=0.0, target_modules=("q_proj", "v_proj"))
    s = TrainingSession(config(tiny_model, lora_config=lora))  # non-DP: the session attaches no hooks
    torch.manual_seed(0)
    ids = torch.randint(3, s.vocab_size, (5, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    light = attach_per_sample_hooks(s.model)
    assert isinstance(light, LinearPerSampleHooks)
    ours = _grad_samples(s.model, light, ids, mask)
    ref = _grad_samples(s.model, GradSampleHooks(s.model, batch_first=True, loss_reduction="sum"), ids, mask)
    assert len(ours) == len(ref) == 8  # (q_proj, v_proj) x (A, B) x 2 layers
    for a, r in zip(ours, ref):
        assert a.shape[0] == 5
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-7)
    s.close()


def test_disabled_hooks_record_nothing_and_cleanup_removes_them():
    lin = nn.Linear(4, 3)
    h = LinearPerSampleHooks(lin)
    h.disable_hooks()
    lin(torch.randn(2, 4)).sum().backward()
    assert getattr(lin.weight, "grad_sample", None) is None
    h.enable_hooks()
    lin(torch.randn(2, 4)).sum().backward()
    assert lin.weight.grad_sample.shape == (2, 3, 4) and lin.bias.grad_sample.shape == (2, 3)
    h.cleanup()
    assert not hasattr(lin.weight, "grad_sample")
    lin(torch.randn(2, 4)).sum().backward()
    assert not hasattr(lin.weight, "grad_sample")


def test_a_layer_called_twice_sums_both_calls():
    lin = nn.Linear(3, 2, bias=False)
    h = LinearPerSampleHooks(lin)
    x1, x2 = torch.randn(4, 3), torch.randn(4, 3)
    (lin(x1).sum() + 2 * lin(x2).sum()).backward()
    expected = torch.einsum("no,ni->noi", torch.ones(4, 2), x1) + torch.einsum("no,ni->noi", 2 * torch.ones(4, 2), x2)
    torch.testing.assert_close(lin.weight.grad_sample, expected)
    torch.testing.assert_close(lin.weight.grad_sample.sum(0), lin.weight.grad)
    h.cleanup()


def test_other_trainable_layers_fall_back_to_opacus_hooks():
    from opacus.grad_sample import GradSampleHooks

    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    h = attach_per_sample_hooks(model)
    assert isinstance(h, GradSampleHooks)
    h.cleanup()
