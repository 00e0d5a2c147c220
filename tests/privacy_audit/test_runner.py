"""Audits on the embedded model: a DP run stays below its reported ε, a non-DP run shows a clearly positive bound.

TINKER_NB_FAST=1 (the default in tests) keeps both runs to a few tens of seconds on two cores.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from tinker_nb import DPConfig, LoRAConfig, TrainingConfig
from tinker_nb.errors import ConfigError, StateError, TinkerError
from tinker_nb.privacy_audit import PrivacyAudit, PrivacyAuditResult, audit_privacy

FAST = os.environ.get("TINKER_NB_FAST") == "1"
MODEL = "tinker-nb/tiny-llama"


def _cfg(dp: DPConfig | None, *, lr: float, batch: int = 16, rank: int = 8) -> TrainingConfig:
    return TrainingConfig(model_ref=MODEL, lora_config=LoRAConfig(rank=rank, alpha=2 * rank), dp_config=dp,
                          batch_size=batch, learning_rate=lr)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_canaries=0), "n_canaries"),
    (dict(n_canaries=-5), "n_canaries"),
    (dict(inclusion_prob=0.0), "inclusion_prob"),
    (dict(inclusion_prob=1.0), "inclusion_prob"),
    (dict(inclusion_prob=1.5), "inclusion_prob"),
    (dict(confidence=0.0), "confidence"),
    (dict(confidence=1.0), "confidence"),
    (dict(confidence=95), "confidence"),
    (dict(canary_kind="emoji"), "canary_kind"),
    (dict(steps=3, epochs=1.0), "steps or epochs"),
])
def test_bad_input_is_refused_before_training(kwargs, match):
    with pytest.raises(ConfigError, match=match) as ei:
        audit_privacy(_cfg(None, lr=1e-3), dataset_size=8, **kwargs)
    assert isinstance(ei.value, TinkerError)


def test_stand_in_needs_a_size_and_real_data_needs_data():
    with pytest.raises(ConfigError, match="dataset_size"):
        audit_privacy(_cfg(None, lr=1e-3))
    with pytest.raises(ConfigError, match="on_real_data"):
        audit_privacy(_cfg(None, lr=1e-3), on_real_data=True)


def test_a_run_not_from_library_draws_is_refused(tmp_path):
    from tinker_nb import ServiceClient

    svc = ServiceClient(workspace=tmp_path / "ws")
    with svc.create_training_client(_cfg(None, lr=1e-3, batch=4)) as tc:
        audit = PrivacyAudit.for_client(tc, 8, length=4, seed=0)
        records = audit.records(["a short note", "another short note", "a third one", "and a fourth"])
        tc.attach_dataset(records)
        tc.forward_backward(["a caller-chosen batch"]).result()
        tc.optim_step().result()
        with pytest.raises(StateError, match="Poisson draws"):
            audit.finish(tc)
        assert not audit.coins.revealed  # refused before any coin was opened


def test_dp_run_lower_bound_is_below_reported_epsilon():
    m = 64 if FAST else 256
    dp = DPConfig(target_epsilon=8.0, target_delta=1e-5)
    res = audit_privacy(_cfg(dp, lr=5e-3), dataset_size=8 if FAST else 256, n_canaries=m, canary_length=32,
                        epochs=1.0, seed=11)
    assert isinstance(res, PrivacyAuditResult)
    assert res.dp_enabled and res.accountant and math.isfinite(res.epsilon_reported)
    assert 0 < res.epsilon_reported <= 8.0 + 1e-6
    assert 0.0 <= res.epsilon_lower < res.epsilon_reported
    assert not res.leak_detected and res.delta == 1e-5 and res.confidence == 0.95
    assert res.guesses == res.k_pos + res.k_neg and 0 <= res.correct <= res.guesses
    assert res.stand_in and res.steps >= 1 and res.dataset_size == (8 if FAST else 256) + m  # placeholder slots
    df = res.scores
    assert len(df) == m and set(df.columns) >= {"canary", "included", "score", "loss_final", "guess", "correct"}
    assert df["guess"].isin(["in", "out", "abstain"]).all() and (df["guess"] != "abstain").sum() == res.guesses
    assert int(df["correct"].fillna(0).sum()) == res.correct
    fig = res.figure()
    assert len([t for t in fig.data if t.type == "histogram"]) == 2
    html = res._repr_html_()
    assert f"{res.epsilon_lower:.3f}" in html and f"{res.epsilon_reported:.3f}" in html
    assert "cannot show" in res.verdict() or "Consistent" in res.verdict()
    d = res.to_dict()
    assert "scores" not in d and d["epsilon_lower"] == res.epsilon_lower


def test_non_dp_run_gives_a_clearly_positive_bound():
    """Many passes over the canaries without DP: membership is visible, the bound is well above 0."""
    m = 64 if FAST else 256
    res = audit_privacy(_cfg(None, lr=4e-3), dataset_size=8 if FAST else 64, n_canaries=m, canary_length=32,
                        steps=110 if FAST else 400, seed=12)
    assert not res.dp_enabled and res.epsilon_reported == math.inf and not res.leak_detected
    assert res.epsilon_lower > 0.3, res.summary()
    assert res.auc > 0.7
    assert res.epsilon_lower <= res.ceiling + 1e-9
    inc = res.scores[res.scores["included"]]["score"]
    exc = res.scores[~res.scores["included"]]["score"]
    assert inc.median() > exc.median()
    assert "∞" in res._repr_html_()


def test_templated_secrets_report_exposure():
    res = audit_privacy(_cfg(None, lr=4e-3), dataset_size=8, n_canaries=16, canary_kind="template",
                        steps=8, exposure_references=64, seed=13)
    assert res.exposure is not None and res.exposure["max_bits"] == pytest.approx(6.0)
    assert "exposure_bits" in res.scores.columns
    assert np.isfinite(res.scores["exposure_bits"]).all()
    assert all(t.startswith("my account number is ") for t in res.scores["text"])
