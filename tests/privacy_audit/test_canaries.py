"""Canaries and sealed coins (tokenizer of the embedded model; no training)."""

from __future__ import annotations

import numpy as np
import pytest

from tinker_nb.errors import ConfigError, DataError, StateError
from tinker_nb.privacy_audit.canaries import IGNORE_INDEX, CanarySet, SealedCoins


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from tinker_nb.engine.assets import resolve_model_ref

    return AutoTokenizer.from_pretrained(resolve_model_ref("tinker-nb/tiny-llama"), local_files_only=True)


def test_random_token_canaries(tok):
    cs = CanarySet.random_tokens(200, tokenizer=tok, length=12, seed=0)
    assert len(cs) == 200 and len({c.input_ids for c in cs.canaries}) == 200
    special = set(tok.all_special_ids)
    for c in cs.canaries:
        assert c.input_ids[0] == tok.bos_token_id and c.secret_start == 1 and len(c.secret_ids) == 12
        assert not special & set(c.secret_ids)
        rec = c.record()
        assert rec["labels"][:1] == [IGNORE_INDEX] and rec["labels"][1:] == list(c.secret_ids)
        ph = c.placeholder()
        assert ph["input_ids"] == rec["input_ids"] and set(ph["labels"]) == {IGNORE_INDEX}
    # Same seed, same canaries; no seed, fresh ones.
    same = CanarySet.random_tokens(5, tokenizer=tok, seed=0).digest()
    assert same == CanarySet.random_tokens(5, tokenizer=tok, seed=0).digest()
    assert CanarySet.random_tokens(5, tokenizer=tok).digest() != CanarySet.random_tokens(5, tokenizer=tok).digest()
    assert cs.secret_space_bits == pytest.approx(12 * np.log2(len(tok) - len(special)))


def test_templated_secrets(tok):
    cs = CanarySet.templated(50, tokenizer=tok, digits=6, seed=1)
    for i, c in enumerate(cs.canaries):
        text = cs.text(i)
        assert text.startswith("my account number is ") and text[-6:].isdigit() and len(text.split()[-1]) == 6
        assert len(c.secret_ids) == 6  # one token per digit
    refs = cs.reference_records(300, seed=2)
    canary_ids = {tuple(c.input_ids) for c in cs.canaries}
    assert len(refs) == 300 and not canary_ids & {tuple(r["input_ids"]) for r in refs}
    assert cs.secret_space_bits == pytest.approx(6 * np.log2(10))
    with pytest.raises(ConfigError, match="placeholder"):
        CanarySet.templated(5, tokenizer=tok, template="no placeholder")


def test_canaries_must_not_be_in_the_data(tok):
    cs = CanarySet.random_tokens(4, tokenizer=tok, seed=0)
    with pytest.raises(DataError, match="identical to a canary"):
        cs.check_disjoint(["some text", {"input_ids": list(cs.canaries[2].input_ids)}])
    ts = CanarySet.templated(4, tokenizer=tok, seed=0)
    secret = ts.text(1).split()[-1]
    with pytest.raises(DataError, match="contains a canary secret"):
        ts.check_disjoint([f"the number {secret} appears here"])
    cs.check_disjoint(["unrelated", {"input_ids": [1, 5, 6]}])


def test_zero_or_bad_canary_counts(tok):
    for n in (0, -3, 1.5, True, None):
        with pytest.raises(ConfigError):
            CanarySet.random_tokens(n, tokenizer=tok)
    with pytest.raises(ConfigError, match="at least one canary"):
        CanarySet([], kind="random", length=1, tokenizer_vocab=10)


def test_sealed_coins_fair():
    coins = SealedCoins(4000, 0.5, seed=3)
    assert coins.audited.all()
    assert "sealed" in repr(coins) and "True" not in repr(coins)
    with pytest.raises(StateError):
        coins.included_after_reveal()
    with pytest.raises(StateError):
        coins.reveal(scores_fixed=False)
    inc = coins.reveal(scores_fixed=True)
    assert 0.46 < inc.mean() < 0.54 and coins.revealed
    assert (coins.included_after_reveal() == inc).all()


@pytest.mark.parametrize("p", [0.2, 0.8])
def test_sealed_coins_other_mix_keeps_fair_coins_for_the_bound(p):
    coins = SealedCoins(20000, p, seed=4)
    inc = coins.reveal(scores_fixed=True)
    aud = coins.audited
    assert abs(inc.mean() - p) < 0.015                       # every canary is in with probability p
    assert abs(aud.mean() - 2 * min(p, 1 - p)) < 0.015       # the audited share
    assert abs(inc[aud].mean() - 0.5) < 0.02                 # audited canaries carry fair coins
    assert (inc[~aud] == (p > 0.5)).all()


@pytest.mark.parametrize("p", [0, 1, -0.1, 1.2, float("nan"), "0.5", True])
def test_inclusion_prob_outside_0_1(p):
    with pytest.raises(ConfigError, match="inclusion_prob"):
        SealedCoins(10, p)


def test_templated_secret_inside_a_chat_record_is_found(tok):
    ts = CanarySet.templated(4, tokenizer=tok, seed=5)
    secret = ts.text(0).split()[-1]
    with pytest.raises(DataError, match="contains a canary secret"):
        ts.check_disjoint([{"prompt": "q", "completion": f"it is {secret}"}])
