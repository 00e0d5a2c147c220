"""Every bad input gets a clear TinkerError and leaves the session unchanged."""

from __future__ import annotations

import pytest
import torch

from tinker_nb.engine.session import TrainingSession
from tinker_nb.errors import ConfigError, DataError, StateError

from .helpers import RECORDS, config, dp


@pytest.fixture(scope="module")
def nondp(tiny_model):
    s = TrainingSession(config(tiny_model, dp=None))
    yield s
    s.close()


@pytest.mark.parametrize("batch,match", [
    ({"tokens": [[1, 2]]}, "unknown batch keys"),
    ({"attention_mask": [[1, 1]]}, "no 'input_ids'"),
    ({"input_ids": [[1, 2, 3], [4, 5]]}, "ragged"),
    ({"input_ids": [1, 2, 3]}, "1-D"),
    ({"input_ids": [[1, 2, 3]], "labels": [[1, 2]]}, "shape"),
    ({"input_ids": [[1, 2, 3]], "attention_mask": [[1, 2, 1]]}, "only 0 and 1"),
    ({"input_ids": [[1, 2, 99999]]}, "outside the model's vocabulary"),
    ({"input_ids": [[1, -5, 2]]}, "outside the model's vocabulary"),
    ({"input_ids": [[1, 2, 3]], "labels": [[1, 2, 99999]]}, "labels"),
    ({"input_ids": torch.ones((2, 3), dtype=torch.float32)}, "integer"),
    ({"input_ids": [[1] * 500]}, "exceeds the limit"),
    ([], "empty"),
    (42, "expects a dict"),
    ([{"input_ids": []}], "no tokens"),
    ([{"input_ids": [1, 2], "foo": 1}], "unknown keys"),
])
def test_bad_batches(nondp, batch, match):
    before = [p.detach().clone() for p in nondp.acc.params]
    with pytest.raises(DataError, match=match):
        nondp.forward_backward(batch)
    assert nondp.acc.examples == 0
    assert all(torch.equal(a, p) for a, p in zip(before, nondp.acc.params))


def test_optim_step_with_nothing_accumulated(nondp):
    with pytest.raises(StateError, match="forward_backward"):
        nondp.optim_step()
    assert nondp.steps == 0


def test_accepted_batch_forms(nondp):
    ids = nondp.tokenizer("the cat sat")["input_ids"]
    for batch in ({"input_ids": torch.tensor([ids])}, {"input_ids": [ids]}, [{"input_ids": ids}], ["the cat sat"]):
        r = nondp.forward_backward(batch)
        assert r.examples == 1 and r.tokens > 0
    nondp.acc.reset()


def test_tinker_datum_objects_are_accepted(nondp):
    class MI:
        def __init__(self, ids):
            self.ids = ids

        def to_ints(self):
            return self.ids

    class Datum:
        def __init__(self, ids):
            self.model_input = MI(ids[:-1])
            self.loss_fn_inputs = {"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)}

    ids = nondp.tokenizer("the cat sat on the mat")["input_ids"]
    r = nondp.forward_backward([Datum(ids)])
    assert r.tokens == len(ids) - 1  # every target token, the last one included
    nondp.acc.reset()
    same = nondp.forward_backward({"input_ids": [ids]})  # the same next-token task in the HF convention
    assert same.tokens == r.tokens and abs(same.loss_sum - r.loss_sum) < 1e-4 * max(1.0, abs(r.loss_sum))
    nondp.acc.reset()


def test_dp_caller_batches_without_a_dataset_are_accounted_by_participation(tiny_model):
    s = TrainingSession(config(tiny_model, dp=dp()))
    s.forward_backward(["the cat", "the dog", "the cat"])  # "the cat" twice in one step: m=2
    s.optim_step()
    m = s.dp_metrics()
    assert m.sampling == "caller-supplied" and not m.accounting_valid
    assert m.caller_supplied_mu2 == pytest.approx(4.0)  # (2/σ)² with σ=1
    with pytest.raises(StateError, match="attach_dataset"):
        list(s.poisson_batches(steps=1))
    s.close()


def test_dataset_checks(tiny_model):
    s = TrainingSession(config(tiny_model, dp=dp(target_delta=0.1)))
    with pytest.raises(ConfigError, match="1/N"):
        s.attach_dataset(RECORDS)
    assert s.source is None and s.accountant.pool is None
    s.close()
    s = TrainingSession(config(tiny_model, dp=dp(), batch_size=100))
    with pytest.raises(ConfigError, match="larger than the data set"):
        s.attach_dataset(RECORDS)
    for bad in ([], "text", [1, 2], [""], [{"foo": 1}]):
        with pytest.raises(DataError):
            s.attach_dataset(bad)
    s.close()


def test_separate_draws_cannot_accumulate(tiny_model):
    s = TrainingSession(config(tiny_model, dp=dp()), noise_seed=0)
    s.attach_dataset(RECORDS)
    it = s.poisson_batches(steps=2)
    s.forward_backward(next(it))
    with pytest.raises(StateError, match="optim_step"):
        s.forward_backward(next(it))
    s.close()


def test_caller_supplied_batches_are_flagged(tiny_model):
    s = TrainingSession(config(tiny_model, dp=dp()))
    s.attach_dataset(RECORDS)
    s.forward_backward(RECORDS[:3])
    s.optim_step()
    m = s.dp_metrics()
    assert m.sampling == "caller-supplied" and not m.accounting_valid
    assert any("participation count" in n for n in m.notes)
    assert m.caller_supplied_mu2 > 0 and m.epsilon_spent > 0
    s.close()


def test_closed_session_refuses(tiny_model):
    s = TrainingSession(config(tiny_model, dp=None))
    s.close()
    with pytest.raises(StateError, match="closed"):
        s.forward_backward(["the cat"])


def test_bad_model_ref_and_modules(tiny_model):
    with pytest.raises(ConfigError, match="could not load model"):
        TrainingSession(config("/nonexistent/model/dir"))
    from tinker_nb.config import LoRAConfig, TrainingConfig

    with pytest.raises(ConfigError, match="target_modules"):
        TrainingSession(TrainingConfig(model_ref=tiny_model, lora_config=LoRAConfig(target_modules=("nope",))))
