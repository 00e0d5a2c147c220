"""What OptimStepResponse.metrics reports about privacy, against the real SDK (adversarial cases)."""

from __future__ import annotations

import pytest

tinker = pytest.importorskip("tinker")
from tinker import types  # noqa: E402

from .conftest import BASE_MODEL, datum, resolved  # noqa: E402


def test_the_same_datum_under_other_weights_counts_as_the_same_record(served, service):
    """Masking a different prompt prefix each step made the same tokens a 'new record' every time (μ² unchanged)."""
    tc = resolved(service("bob").create_lora_training_client(base_model=BASE_MODEL, rank=4))
    tok = tc.get_tokenizer()
    text = "note 99: the same patient record, sent twice under different loss weights"
    adam = types.AdamParams(learning_rate=1e-3)
    tc.forward_backward([datum(tok, text)], "cross_entropy").result()
    m1 = tc.optim_step(adam).result().metrics
    tc.forward_backward([datum(tok, text, mask_prompt=3)], "cross_entropy").result()
    m2 = tc.optim_step(adam).result().metrics
    # σ = 1: this record's μ² goes from 1 to 2, so the tenant's worst-record μ² grows by 1 (it grew by 0 before)
    assert m2["dp_caller_supplied_mu2"] - m1["dp_caller_supplied_mu2"] == pytest.approx(1.0)
    assert m2["dp_epsilon"] > m1["dp_epsilon"]
    assert m2["dp_accounting_caller_supplied"] == 1.0 and m2["dp_amplification"] == 0.0
    assert m2["dp_accounting_valid"] == 0.0  # participation counting rests on an assumption the server cannot check
