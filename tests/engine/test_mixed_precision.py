"""Mixed precision: bf16 base weights, float32 LoRA / per-example gradients / clipping / noise / optimizer.

Runs on CPU, so the dtype logic of the GPU path is covered without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from tinker_nb.config import LoRAConfig
from tinker_nb.engine.dp import GradientAccumulator
from tinker_nb.engine.loss import per_sequence_loss
from tinker_nb.engine.model import BASE_DTYPE_ENV, add_lora, load_base_model, resolve_base_dtype
from tinker_nb.errors import ConfigError

LORA = LoRAConfig(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj", "up_proj", "down_proj"))
CPU = torch.device("cpu")


def _model(path: str, dtype):
    loaded = load_base_model(path, device=CPU, dtype=dtype)
    model = add_lora(loaded.model, LORA, seed=3)
    model.train()
    return model, loaded.vocab_size


def _batch(vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (6, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def _write_noisy_grads(acc, *, noise_std, normaliser):
    """The step's noise, whichever noise source write_grads takes (secure AES-CTR noise, or a torch generator)."""
    import inspect

    if "noise" in inspect.signature(acc.write_grads).parameters:
        from tinker_nb.engine.noise import GaussianNoise

        acc.write_grads(noise_std=noise_std, normaliser=normaliser, noise=GaussianNoise.seeded(0))
    else:
        acc.write_grads(noise_std=noise_std, normaliser=normaliser, generator=torch.Generator().manual_seed(0))


def _clipped_sum(model, vocab, clip):
    acc = GradientAccumulator(model, dp=True, max_grad_norm=clip)
    ids, mask, labels = _batch(vocab)
    loss, _ = per_sequence_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
    loss.sum().backward()
    stats = acc.absorb(ids.shape[0])
    flat = torch.cat([s.flatten() for s in acc.sums])
    return acc, flat, stats


def test_bf16_base_keeps_every_dp_quantity_in_fp32(tiny_model):
    model, vocab = _model(tiny_model, "bfloat16")
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen if p.is_floating_point())
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    acc, flat, stats = _clipped_sum(model, vocab, 1.0)
    assert flat.dtype == torch.float32 and torch.isfinite(flat).all() and stats.norm_max > 0
    _write_noisy_grads(acc, noise_std=1.0, normaliser=6.0)
    assert all(p.grad.dtype == torch.float32 for p in trainable)
    opt = torch.optim.AdamW(acc.params, lr=1e-2)
    before = [p.detach().clone() for p in trainable]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, trainable))
    assert all(v.dtype == torch.float32 for st in opt.state.values() for k, v in st.items() if k != "step")
    assert all(p.dtype == torch.float32 for p in trainable)
    acc.close()


@pytest.mark.parametrize("clip", [1e-3, 1e3])  # every example clipped / none clipped
def test_bf16_clipped_sum_matches_fp32_within_tolerance(tiny_model, clip):
    m32, vocab = _model(tiny_model, torch.float32)
    m16, _ = _model(tiny_model, torch.bfloat16)
    with torch.no_grad():  # same adapter values (peft rounds its init through the base dtype), fp32 in both
        for a, b in zip(m32.parameters(), m16.parameters()):
            if a.requires_grad:
                assert b.dtype == torch.float32
                b.copy_(a)
    acc32, ref, s32 = _clipped_sum(m32, vocab, clip)
    acc16, got, s16 = _clipped_sum(m16, vocab, clip)
    rel = float((got - ref).norm() / ref.norm())
    assert rel < 0.05, rel
    assert float(torch.nn.functional.cosine_similarity(got, ref, dim=0)) > 0.998
    assert s16.norm_max == pytest.approx(s32.norm_max, rel=0.05)
    assert s16.clipped == s32.clipped
    acc32.close()
    acc16.close()


def test_dtype_comes_from_the_environment_when_not_given(tiny_model, monkeypatch):
    monkeypatch.setenv(BASE_DTYPE_ENV, "bf16")
    assert resolve_base_dtype(None, CPU) == torch.bfloat16
    loaded = load_base_model(tiny_model, device=CPU)
    assert loaded.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert resolve_base_dtype(torch.float32, CPU) == torch.float32  # an explicit argument wins
    monkeypatch.delenv(BASE_DTYPE_ENV)
    assert resolve_base_dtype(None, CPU) == torch.float32
    assert resolve_base_dtype("auto", CPU) == torch.float32  # bf16 only on a CUDA device that supports it
    monkeypatch.setenv(BASE_DTYPE_ENV, "int8")
    with pytest.raises(ConfigError, match="TINKER_NB_BASE_DTYPE"):
        resolve_base_dtype(None, CPU)


def test_session_trains_a_bf16_base_through_the_environment(tiny_model, monkeypatch):
    from tinker_nb.engine.session import TrainingSession

    from .helpers import RECORDS, config, dp

    monkeypatch.setenv(BASE_DTYPE_ENV, "bfloat16")
    s = TrainingSession(config(tiny_model, dp=dp()))
    try:
        s.attach_dataset(RECORDS)
        trainable = [p for p in s.model.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in trainable]
        s.forward_backward({"input_ids": [[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]]})
        s.optim_step()
        assert s.model.get_input_embeddings().weight.dtype == torch.bfloat16
        assert all(p.dtype == torch.float32 for p in trainable)
        assert any(not torch.equal(b, p) for b, p in zip(before, trainable))
    finally:
        s.close()


def test_training_config_base_dtype_selects_bf16_base_with_fp32_dp_state(tiny_model):
    from tinker_nb.config import DPConfig, LoRAConfig, TrainingConfig
    from tinker_nb.engine.session import TrainingSession

    s = TrainingSession(TrainingConfig(model_ref=tiny_model, base_dtype="bfloat16", batch_size=2,
                                       lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj",)),
                                       dp_config=DPConfig(noise_multiplier=1.0, target_delta=1e-3)))
    frozen = [p for p in s.model.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in s.acc.params)
    s.forward_backward(["the cat sat", "the dog ran"])
    res = s.optim_step()
    assert res.noise_std == 1.0 and all(p.dtype == torch.float32 for p in s.acc.params)
    s.close()
