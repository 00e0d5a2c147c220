"""sample() parameters, greedy determinism, and bit-exact resume from checkpoint blobs."""

from __future__ import annotations

import pytest
import torch

from tinker_nb.engine.checkpoint import restore_session, session_to_blobs
from tinker_nb.engine.session import TrainingSession
from tinker_nb.errors import ConfigError, DataError

from .helpers import RECORDS, config, dp


@pytest.fixture(scope="module")
def s(tiny_model):
    sess = TrainingSession(config(tiny_model, dp=None))
    yield sess
    sess.close()


def test_greedy_is_deterministic(s):
    a = s.sample(["the cat"], max_tokens=6, temperature=0)
    b = s.sample(["the cat"], max_tokens=6, temperature=0)
    assert a.samples[0].tokens == b.samples[0].tokens
    x = a.samples[0]
    assert x.completion_tokens == len(x.tokens) <= 6
    assert x.finish_reason in ("stop", "length")


def test_seeded_sampling_is_reproducible_and_varies(s):
    a = s.sample(["the"], max_tokens=8, temperature=1.5, seed=1, num_samples=3)
    b = s.sample(["the"], max_tokens=8, temperature=1.5, seed=1, num_samples=3)
    assert [x.tokens for x in a.samples] == [x.tokens for x in b.samples]
    assert len({tuple(x.tokens) for x in a.samples}) > 1


def test_top_k_one_equals_greedy(s):
    g = s.sample(["the dog"], max_tokens=6, temperature=0)
    k = s.sample(["the dog"], max_tokens=6, temperature=1.0, top_k=1, seed=5)
    assert g.samples[0].tokens == k.samples[0].tokens


def test_length_and_stop(s):
    r = s.sample(["the"], max_tokens=3, temperature=1.0, seed=0)
    assert r.samples[0].finish_reason in ("length", "stop")
    full = s.sample(["the"], max_tokens=10, temperature=0).samples[0]
    if len(full.completion) >= 2:
        stop = full.completion[1:3].strip() or full.completion[1]
        cut = s.sample(["the"], max_tokens=10, temperature=0, stop=[stop]).samples[0]
        assert cut.finish_reason == "stop" and stop not in cut.completion


@pytest.mark.parametrize("kw,err", [
    (dict(max_tokens=0), ConfigError), (dict(temperature=-1), ConfigError), (dict(top_p=0), ConfigError),
    (dict(top_k=-1), ConfigError), (dict(stop=[""]), ConfigError), (dict(seed=-2), ConfigError),
    (dict(max_tokens=10_000), DataError),
])
def test_bad_sampling_params(s, kw, err):
    with pytest.raises(err):
        s.sample(["the"], **kw)
    with pytest.raises(DataError):
        s.sample([])


def test_resume_restores_weights_and_optimizer_exactly_never_budget_or_rng(tiny_model, tmp_path):
    from tinker_nb.privacy import PrivacyOdometer

    odo = PrivacyOdometer(tmp_path / "privacy.sqlite")
    a = TrainingSession(config(tiny_model, dp=dp()), odometer=odo)
    a.attach_dataset(RECORDS)
    it = a.poisson_batches(steps=100)
    for _ in range(3):
        a.forward_backward(next(it))
        a.optim_step()
    blobs = session_to_blobs(a, include_optimizer=True)
    assert "rng.safetensors" not in blobs and "accumulator.safetensors" not in blobs
    saved = [p.detach().clone() for p in a.acc.params]
    for _ in range(2):
        a.forward_backward(next(it))
        a.optim_step()
    eps_a = a.epsilon()
    a.close()

    b = TrainingSession(config(tiny_model, dp=dp()), odometer=odo)
    b.attach_dataset(RECORDS)
    restore_session(b, blobs)
    assert all(torch.equal(x, p) for x, p in zip(saved, b.acc.params))
    assert b.steps == 0  # a checkpoint never sets the step count...
    assert b.epsilon() == pytest.approx(eps_a)  # ...and the data set's odometer still holds all 5 steps
    b.close()


def test_resume_without_dp_continues_bit_exactly(tiny_model):
    a = TrainingSession(config(tiny_model, dp=None))
    for _ in range(2):
        a.forward_backward(RECORDS[:3])
        a.optim_step()
    blobs = session_to_blobs(a, include_optimizer=True)
    a.forward_backward(RECORDS[3:6])
    a.optim_step()
    wa = [p.detach().clone() for p in a.acc.params]
    a.close()
    b = TrainingSession(config(tiny_model, dp=None))
    restore_session(b, blobs)
    b.forward_backward(RECORDS[3:6])
    b.optim_step()
    assert all(torch.equal(x, p) for x, p in zip(wa, b.acc.params))
    b.close()


def test_save_with_a_pending_step_is_refused(tiny_model):
    from tinker_nb.errors import StateError

    a = TrainingSession(config(tiny_model, dp=None))
    a.forward_backward(RECORDS[:2])
    with pytest.raises(StateError, match="optim_step"):
        session_to_blobs(a, include_optimizer=False)
    a.close()


def test_incompatible_checkpoint_is_refused_unchanged(tiny_model):
    a = TrainingSession(config(tiny_model, dp=None))
    a.forward_backward(RECORDS[:2])
    a.optim_step()
    blobs = session_to_blobs(a, include_optimizer=False)
    a.close()
    b = TrainingSession(config(tiny_model, dp=None, batch_size=2))
    before = [p.detach().clone() for p in b.acc.params]
    with pytest.raises(ConfigError, match="batch_size"):
        restore_session(b, blobs)
    assert b.steps == 0 and all(torch.equal(x, p) for x, p in zip(before, b.acc.params))
    b.close()
