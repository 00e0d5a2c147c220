"""The one tokenisation rule, on the embedded model's tokenizer (and a copy of it with a chat template)."""

from __future__ import annotations

import copy

import pytest

from tinker_nb.engine.assets import ASSET_DIR
from tinker_nb.engine.tokenize import IGNORE_INDEX, encode_prompt, encode_record
from tinker_nb.errors import DataError

TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What hurts?"},
        {"role": "assistant", "content": "My knee."}, {"role": "user", "content": "Since when?"},
        {"role": "assistant", "content": "Monday."}]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ASSET_DIR))


@pytest.fixture(scope="module")
def chat_tok(tok):
    t = copy.deepcopy(tok)
    t.chat_template = TEMPLATE
    return t


def raw(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def trained_text(tok, enc):
    return tok.decode([t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX])


def test_text_gets_bos_and_eos_and_full_loss(tok):
    enc = encode_record(tok, "Patient note: knee pain.", max_len=64)
    body = raw(tok, "Patient note: knee pain.")
    assert enc["input_ids"] == [tok.bos_token_id] + body + [tok.eos_token_id]
    assert enc["labels"][1:] == enc["input_ids"][1:]
    assert encode_record(tok, {"text": "Patient note: knee pain."}, max_len=64) == enc


def test_bos_not_doubled_and_truncation(tok):
    enc = encode_record(tok, "<s>hello world", max_len=64)
    assert enc["input_ids"].count(tok.bos_token_id) == 1 and enc["input_ids"][0] == tok.bos_token_id
    long = encode_record(tok, "word " * 200, max_len=16)
    assert len(long["input_ids"]) == len(long["labels"]) == 16 and long["input_ids"][0] == tok.bos_token_id


def test_prompt_completion_loss_on_completion_only(tok):
    rec = {"prompt": "Symptom: cough.\nPlan:", "completion": " rest and fluids."}
    enc = encode_record(tok, rec, max_len=64)
    p, c = raw(tok, rec["prompt"]), raw(tok, rec["completion"])
    assert enc["input_ids"] == [tok.bos_token_id] + p + c + [tok.eos_token_id]
    assert enc["labels"] == [IGNORE_INDEX] * (1 + len(p)) + c + [tok.eos_token_id]
    # generation sees exactly the prompt tokens training conditioned on
    assert encode_prompt(tok, rec["prompt"], max_len=64) == enc["input_ids"][: 1 + len(p)]
    with pytest.raises(DataError, match="no trainable tokens"):
        encode_record(tok, {"prompt": "x " * 100, "completion": " y"}, max_len=20)


def test_chat_fallback_without_template(tok):
    assert not tok.chat_template
    enc = encode_record(tok, {"messages": CHAT}, max_len=128)
    text = tok.decode(enc["input_ids"], skip_special_tokens=True)
    assert text == "system: Be brief.\nuser: What hurts?\nassistant: My knee.\nuser: Since when?\nassistant: Monday.\n"
    assert trained_text(tok, enc) == " My knee.\n Monday.\n</s>"
    prompt = encode_prompt(tok, CHAT[:2], max_len=128)
    assert tok.decode(prompt, skip_special_tokens=True) == "system: Be brief.\nuser: What hurts?\nassistant:"
    assert enc["input_ids"][: len(prompt)] == prompt  # same tokens up to the first assistant turn


def test_chat_template_loss_on_assistant_turns(chat_tok):
    enc = encode_record(chat_tok, {"messages": CHAT}, max_len=128)
    full = chat_tok.apply_chat_template(CHAT, tokenize=False)
    assert enc["input_ids"] == raw(chat_tok, full)  # the template's own text, BOS/EOS not doubled
    assert enc["input_ids"].count(chat_tok.bos_token_id) == 1
    assert trained_text(chat_tok, enc) == "My knee.</s>Monday.</s>"
    prompt = encode_prompt(chat_tok, CHAT[:2], max_len=128)
    assert chat_tok.decode(prompt).endswith("<|assistant|>")
    assert enc["input_ids"][: len(prompt)] == prompt


def test_chat_ending_on_user_turn_trains_earlier_assistant_only(chat_tok, tok):
    for t in (chat_tok, tok):
        enc = encode_record(t, {"messages": CHAT[:4]}, max_len=128)
        assert "My knee." in trained_text(t, enc) and "Since when" not in trained_text(t, enc)
        assert enc["labels"][-1] == IGNORE_INDEX


def test_tokenised_records_pass_through(tok):
    enc = encode_record(tok, {"input_ids": [1, 5, 6, 7], "labels": [-100, 5, 6, 7]}, max_len=3)
    assert enc == {"input_ids": [1, 5, 6], "labels": [-100, 5, 6]}
    enc = encode_record(tok, {"input_ids": [1, 5, 0], "attention_mask": [1, 1, 0]}, max_len=8)
    assert enc["labels"] == [1, 5, IGNORE_INDEX]


def test_prompts(tok):
    assert encode_prompt(tok, "The patient", max_len=64) == [tok.bos_token_id] + raw(tok, "The patient")
    assert encode_prompt(tok, "", max_len=64) == [tok.bos_token_id]
    assert tok.eos_token_id not in encode_prompt(tok, "The patient", max_len=64)
    with pytest.raises(DataError, match="at most 8 fit"):
        encode_prompt(tok, "word " * 50, max_len=8)
    with pytest.raises(DataError):
        encode_prompt(tok, 42, max_len=8)


def test_bad_records(tok):
    for bad in (3, {"prompt": "p"}, {"messages": [{"role": "user", "content": "x"}]}, ""):
        with pytest.raises(DataError):
            encode_record(tok, bad, max_len=32)
    with pytest.raises(DataError, match="max_len"):
        encode_record(tok, "x", max_len=0)
