"""Shared fixtures: a tiny Llama built from a config (no downloads), isolated workspaces and key dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TINKER_NB_FAST", "1")

CORPUS = [
    "the cat sat on the mat and the dog ran to the park",
    "patient reports mild headache and fever since monday",
    "the ticket says the printer on floor two is broken again",
    "a small bird sang in the old tree by the river",
] * 25


def build_tiny_model(path: Path, *, hidden: int = 32, layers: int = 2, vocab: int = 300, max_pos: int = 96) -> Path:
    """Byte-level BPE tokenizer + randomly initialised LlamaForCausalLM, saved with save_pretrained."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=max_pos, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(autouse=True)
def _isolated_keys(tmp_path, monkeypatch):
    """Never touch the user's ~/.config: key files and workspaces live in the test's tmp dir."""
    monkeypatch.setenv("TINKER_NB_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("TINKER_NB_ROOT_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
