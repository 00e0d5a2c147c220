"""DP-SGD correctness: per-example clipping, sensitivity, accumulation, noise-only steps, budget."""

from __future__ import annotations

import pytest
import torch

from tinker_nb.engine.batches import to_batch
from tinker_nb.engine.loss import per_sequence_loss
from tinker_nb.engine.session import TrainingSession
from tinker_nb.errors import BudgetExceededError

from .helpers import RECORDS, config, dp


class _ZeroNoise:
    """White-box: isolate accumulation from noise (the real GaussianNoise is tested separately)."""

    fixed = True

    def normal(self, shape, std, *, device="cpu", dtype=torch.float32, prefetch=False):
        return torch.zeros(shape, device=device, dtype=dtype)


@pytest.fixture
def session(tiny_model):
    s = TrainingSession(config(tiny_model, dp=dp()), noise_seed=0)
    s.attach_dataset(RECORDS)
    yield s
    s.close()


def _naive_clipped_sum(s: TrainingSession, batch: dict, clip: float) -> list[torch.Tensor]:
    """Reference: one example at a time, plain autograd, clip, sum. No opacus involved."""
    s.acc.hooks.disable_hooks()
    params = s.acc.params
    total = [torch.zeros_like(p) for p in params]
    b = to_batch(batch, tokenizer=s.tokenizer, vocab_size=s.vocab_size, max_len=s.max_len)
    for i in range(b.size):
        n = int(b.attention_mask[i].sum())
        logits = s.model(input_ids=b.input_ids[i:i + 1, :n], attention_mask=b.attention_mask[i:i + 1, :n]).logits
        loss, _ = per_sequence_loss(logits, b.labels[i:i + 1, :n])
        grads = torch.autograd.grad(loss.sum(), params)
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for t, g in zip(total, grads):
            t.add_(g * factor)
    s.acc.hooks.enable_hooks()
    return total


def test_per_example_clipping_matches_naive_loop(session):
    batch = {"input_ids": None}
    texts = RECORDS[:4]
    from tinker_nb.engine.batches import collate

    enc = [{"input_ids": session.tokenizer(t)["input_ids"]} for t in texts]
    batch = collate(enc, pad_id=session.tokenizer.pad_token_id)
    for clip in (1e-3, 1e3):  # all clipped / none clipped
        session.acc.max_grad_norm = clip
        session.acc.reset()
        session.forward_backward(batch)
        ours = session.acc.snapshot()
        ref = _naive_clipped_sum(session, batch, clip)
        for a, r in zip(ours, ref):
            rel = float((a - r).norm() / (r.norm() + 1e-12))
            assert rel <= 1e-4, rel
    session.acc.reset()


def test_sensitivity_outlier_moves_sum_by_at_most_C(session):
    """With σ=0, adding one example with a huge gradient changes the clipped sum by at most C."""
    from tinker_nb.engine.batches import collate

    C = session.dp.max_grad_norm
    tok = session.tokenizer
    normal = [{"input_ids": tok(t)["input_ids"]} for t in RECORDS[:3]]
    # Random tokens with random labels: a gradient far larger than C (checked below).
    g = torch.Generator().manual_seed(0)
    outlier = {"input_ids": torch.randint(3, session.vocab_size, (40,), generator=g).tolist()}
    session.forward_backward(collate(normal, pad_id=tok.pad_token_id))
    without = session.acc.snapshot()
    session.acc.reset()
    res = session.forward_backward(collate(normal + [outlier], pad_id=tok.pad_token_id))
    assert res.grad_norm_max > C  # the outlier is clipped
    with_ = session.acc.snapshot()
    diff = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(with_, without)))
    assert float(diff) <= C * (1 + 1e-4)
    total = torch.sqrt(sum((a ** 2).sum() for a in with_))
    assert float(total) <= 4 * C * (1 + 1e-4)
    # The written gradient (σ=0) is the clipped sum over the public expected batch size.
    session.acc.write_grads(noise_std=0.0, normaliser=float(session.config.batch_size))
    grad_norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in session.acc.params))
    assert float(grad_norm) <= 4 * C / session.config.batch_size * (1 + 1e-4)
    session.acc.reset()


def test_two_half_batches_equal_one_full_batch(tiny_model):
    from tinker_nb.engine.batches import collate

    results = []
    for split in (False, True):
        s = TrainingSession(config(tiny_model, dp=dp()), noise_seed=0)
        s.attach_dataset(RECORDS)
        s.noise = _ZeroNoise()  # white-box: isolate accumulation from noise
        enc = [{"input_ids": s.tokenizer(t)["input_ids"]} for t in RECORDS[:4]]
        if split:
            s.forward_backward(collate(enc[:2], pad_id=0))
            s.forward_backward(collate(enc[2:], pad_id=0))
        else:
            s.forward_backward(collate(enc, pad_id=0))
        results.append(s.acc.snapshot())
        s.optim_step()
        results.append([p.detach().clone() for p in s.acc.params])
        s.close()
    for a, b in zip(results[0], results[2]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(results[1], results[3]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_noise_is_added_once_per_step_with_std_sigma_C(session):
    """Empty accumulation + σ: the written gradient is pure noise with std σ·C / expected batch."""
    session.acc.write_grads(noise_std=session.sigma * session.dp.max_grad_norm,
                            normaliser=float(session.config.batch_size), noise=session.noise)
    flat = torch.cat([p.grad.flatten() for p in session.acc.params])
    expected = session.sigma * session.dp.max_grad_norm / session.config.batch_size
    assert flat.numel() >= 500
    assert abs(float(flat.std()) / expected - 1) < 0.15
    assert abs(float(flat.mean())) < 5 * expected / flat.numel() ** 0.5
    session.acc.reset()


def test_empty_poisson_draw_is_a_noise_only_step(tiny_model):
    s = TrainingSession(config(tiny_model, dp=dp(), batch_size=1), noise_seed=3)
    s.attach_dataset(RECORDS)
    found = False
    for b in s.poisson_batches(steps=200):
        before = [p.detach().clone() for p in s.acc.params]
        steps = s.steps
        r = s.forward_backward(b)
        s.optim_step()
        if r.noise_only:
            assert r.examples == 0 and s.steps == steps + 1
            assert any(not torch.equal(a, p) for a, p in zip(before, s.acc.params))  # noise moved the weights
            found = True
            break
    assert found, "q=1/40: an empty draw is expected within 200 draws"
    assert s.accountant.pool_composition().steps == s.steps  # the noise-only step is charged too
    s.close()


def test_budget_refusal_changes_nothing(tiny_model):
    s = TrainingSession(config(tiny_model, dp=dp(target_epsilon=1.0, noise_multiplier=2.0)), noise_seed=0)
    info = s.attach_dataset(RECORDS)
    max_steps = info["max_steps"]
    assert max_steps is not None and max_steps > 0
    it = s.poisson_batches(steps=max_steps + 5)
    for _ in range(max_steps):
        s.forward_backward(next(it))
        s.optim_step()
    eps = s.epsilon()
    assert eps <= 1.0
    weights = [p.detach().clone() for p in s.acc.params]
    steps, comp = s.steps, s.accountant.pool_composition()
    d = next(it)
    with pytest.raises(BudgetExceededError, match="target_epsilon"):
        s.forward_backward(d)
    assert s.steps == steps and s.accountant.pool_composition() == comp and s.epsilon() == eps
    assert s.accountant.pending is None and s.acc.examples == 0
    assert all(torch.equal(a, p) for a, p in zip(weights, s.acc.params))
    s.close()


def test_lora_weights_change_and_loss_falls_without_dp(tiny_model):
    s = TrainingSession(config(tiny_model, dp=None), noise_seed=0)
    batch = RECORDS[:4]
    first = s.forward_backward(batch).loss
    for _ in range(15):
        s.optim_step()
        last = s.forward_backward(batch).loss
    assert last < first
    s.close()


def test_close_removes_hooks_and_recreate_works(tiny_model):
    s = TrainingSession(config(tiny_model, dp=dp()), noise_seed=0)
    s.close()
    assert s.acc.hooks is None
    s2 = TrainingSession(config(tiny_model, dp=dp()), noise_seed=0)
    s2.attach_dataset(RECORDS)
    b = next(s2.poisson_batches(steps=1))
    s2.forward_backward(b)
    s2.optim_step()
    s2.close()
