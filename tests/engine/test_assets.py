"""The embedded default model: shipped, small, loads offline, writes recognisable English."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tinker_nb.engine.assets import DEFAULT_MODEL_REF, resolve_model_ref
from tinker_nb.engine.demo_data import demo_records, story_corpus

ASSET = Path(resolve_model_ref(DEFAULT_MODEL_REF))


def test_asset_folder_is_complete_and_small():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "provenance.json"):
        assert (ASSET / name).is_file(), name
    size = sum(f.stat().st_size for f in ASSET.iterdir() if f.is_file())
    assert size <= 20 * 1024 * 1024
    prov = json.loads((ASSET / "provenance.json").read_text())
    assert prov["training"]["steps"] > 0 and prov["training"]["held_out_loss"] < 3.0
    assert len(prov["corpus"]["train_sha256"]) == 64


def test_resolve_passes_other_refs_through(tmp_path):
    assert resolve_model_ref(str(tmp_path)) == str(tmp_path)
    assert resolve_model_ref("org/model") == "org/model"


def test_generators_are_deterministic():
    assert demo_records(5, seed=1) == demo_records(5, seed=1)
    assert demo_records(5, seed=1) != demo_records(5, seed=2)
    assert all(r.startswith("Patient note:") for r in demo_records(20))
    assert story_corpus(3, seed=0) == story_corpus(3, seed=0)


def test_loads_offline_and_writes_known_words():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ASSET, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(ASSET, local_files_only=True).eval()
    text = "The little dog ran to the park."
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    vocab = set(re.findall(r"[a-z]+", " ".join(story_corpus(5000, seed=0)).lower()))
    ids = tok("One day, Anna and the", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=30, do_sample=False, pad_token_id=tok.pad_token_id)
    words = re.findall(r"[a-z]+", tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).lower())
    assert len(words) >= 5
    known = sum(w in vocab for w in words) / len(words)
    assert known > 0.8, words


def test_every_token_of_the_private_notes_occurs_in_pretraining():
    """LoRA cannot move (tied) embeddings: a note token the base model never saw stays unlikely after any
    fine-tune, which made the demo's DP after-samples word salad (docs/MODEL.md, "Why the leaflets")."""
    from collections import Counter

    from transformers import AutoTokenizer

    from tinker_nb.engine.demo_data import health_leaflets, health_sentences

    tok = AutoTokenizer.from_pretrained(ASSET, local_files_only=True)
    prov = json.loads((ASSET / "provenance.json").read_text())
    assert prov["corpus"]["health_leaflets"] >= 20_000
    seen = Counter(t for s in story_corpus(5000) + health_sentences(500) + health_leaflets(20_000)
                   for t in tok(s)["input_ids"])
    notes = {t for s in demo_records(1000) for t in tok(s)["input_ids"]}
    unseen = sorted(tok.decode([t]) for t in notes if seen[t] < 20)
    assert not unseen, f"note tokens (almost) never seen in pretraining: {unseen}"


def test_leaflets_never_use_the_private_notes_format():
    from tinker_nb.engine.demo_data import health_leaflets

    texts = health_leaflets(20_000)
    assert not any("Patient note" in t or (" reports" in t and "On exam" in t) for t in texts)
    assert len(set(texts)) > 1000
