"""The audit pipeline against a fake client (no torch): slots, placeholders, sealed coins, other mixes, refusals."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from tinker_nb.errors import ConfigError, StateError
from tinker_nb.privacy_audit import CanarySet, PrivacyAudit


class _Tok:
    """Just enough of a tokenizer for random-token canaries."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0
    all_special_ids = (0, 1, 2)

    def __len__(self):
        return 500


class FakeClient:
    """Memorises exactly the labelled records it was given: loss drops by ``signal`` for those."""

    def __init__(self, signal: float, *, sampling: str = "poisson", dp: bool = True, seed: int = 0):
        self.signal, self.sampling, self.dp = signal, sampling, dp
        self.trained: set[tuple[int, ...]] = set()
        self.n = None
        self.rng = np.random.default_rng(seed)

    def attach_dataset(self, records):
        self.n = len(records)
        for r in records:
            if isinstance(r, dict) and any(x != -100 for x in r["labels"]):
                self.trained.add(tuple(r["input_ids"]))

    def forward(self, batch):
        return SimpleNamespace(losses=[50.0 - self.signal * (tuple(r["input_ids"]) in self.trained)
                                       + float(self.rng.standard_normal()) for r in batch])

    def get_dp_metrics(self):
        return SimpleNamespace(dp_enabled=self.dp, epsilon_spent=8.0 if self.dp else math.inf, client_epsilon=None,
                               accountant="pld" if self.dp else None, delta=1e-5 if self.dp else None,
                               accounting_valid=self.dp, sampling=self.sampling, steps=10, dataset_size=self.n,
                               notes=[])


def _audit(m=200, **kw):
    return PrivacyAudit(CanarySet.random_tokens(m, tokenizer=_Tok(), length=8, seed=0), seed=1, **kw)


def test_slots_keep_the_data_set_size_fixed():
    a = _audit(100)
    recs = a.records(["note one", "note two"])
    assert len(recs) == 102
    slots = recs[2:]
    inc = a.coins._for_training()
    for s, c, i in zip(slots, a.canaries.canaries, inc):
        assert tuple(s["input_ids"]) == c.input_ids
        assert any(x != -100 for x in s["labels"]) == bool(i)
    b = _audit(100, fixed_rate=False)
    assert len(b.records(["x"])) == 1 + int(b.coins._for_training().sum())


def test_strong_signal_gives_a_bound_near_the_ceiling_and_weak_none():
    a = _audit(200)
    tc = FakeClient(signal=20.0, dp=False)
    tc.attach_dataset(a.records(["a", "b"]))
    assert not a.coins.revealed
    res = a.finish(tc)
    assert a.coins.revealed and res.correct == res.guesses
    assert 2.5 < res.epsilon_lower <= res.ceiling
    assert res.auc == 1.0 and not res.leak_detected
    df = res.scores
    assert (df.loc[df["guess"] == "in", "included"]).all() and not df.loc[df["guess"] == "out", "included"].any()

    b = _audit(200)
    tc = FakeClient(signal=0.0)
    tc.attach_dataset(b.records(["a", "b"]))
    res = b.finish(tc)
    assert res.epsilon_lower < 1.0 and res.epsilon_reported == 8.0 and res.accountant == "pld"


@pytest.mark.parametrize("p", [0.25, 0.75])
def test_other_inclusion_mix_audits_the_fair_coin_canaries(p):
    a = _audit(400, inclusion_prob=p)
    tc = FakeClient(signal=20.0, dp=False)
    tc.attach_dataset(a.records(["a"]))
    res = a.finish(tc)
    assert res.audited_canaries == int(a.coins.audited.sum()) < 400
    assert abs(res.audited_canaries / 400 - 2 * min(p, 1 - p)) < 0.12
    assert res.inclusion_prob == p and res.correct == res.guesses and res.epsilon_lower > 1.5
    assert res.scores.loc[~res.scores["audited"], "guess"].eq("abstain").all()


def test_runs_not_from_library_draws_are_refused_and_coins_stay_sealed():
    for sampling in ("caller-supplied", "mixed (poisson and caller-supplied)", "none"):
        a = _audit(20)
        tc = FakeClient(signal=5.0, sampling=sampling)
        tc.attach_dataset(a.records(["a"]))
        with pytest.raises(StateError, match="Poisson draws"):
            a.finish(tc)
        assert not a.coins.revealed
    a = _audit(20)
    tc = FakeClient(signal=5.0)
    a.records(["a"])
    tc.attach_dataset(["other", "data"])
    with pytest.raises(StateError, match=r"audit\.records"):
        a.finish(tc)


def test_base_scores_are_needed_when_asked_for():
    a = _audit(20, relative_to_base=True)
    tc = FakeClient(signal=5.0)
    tc.attach_dataset(a.records(["a"]))
    with pytest.raises(StateError, match="score_base"):
        a.finish(tc)
    b = _audit(20, relative_to_base=True)
    tc = FakeClient(signal=5.0)
    b.score_base(tc)
    tc.attach_dataset(b.records(["a"]))
    res = b.finish(tc)
    assert res.relative_to_base and np.isfinite(res.scores["loss_base"]).all()


def test_bad_audit_settings():
    cs = CanarySet.random_tokens(10, tokenizer=_Tok(), seed=0)
    for kw in (dict(confidence=1.0), dict(inclusion_prob=0.0), dict(k_pos=3), dict(k_pos=6, k_neg=6),
               dict(exposure_references=10), dict(delta=1.0)):
        with pytest.raises(ConfigError):
            PrivacyAudit(cs, **kw)
    with pytest.raises(ConfigError):
        PrivacyAudit("not canaries")
