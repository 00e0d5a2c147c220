"""Build the embedded default model `tinker-nb/tiny-llama` from scratch, deterministically, on the CPU.

1. Corpus: 60,000 template stories + 2,000 short "health" sentences + 20,000 public health-leaflet sentences
   (tinker_nb.engine.demo_data; general medical vocabulary, never the private notes' format), no downloads.
2. Tokenizer: byte-level BPE (vocab 2048) trained with `tokenizers` on the stories AND the demo's clinical
   notes, so the private fine-tuning domain tokenises well; the model itself never sees the clinical notes.
3. Model: LlamaForCausalLM (hidden 256, 4 layers, 4 heads, tied embeddings), pretrained with AdamW on
   packed 128-token sequences, seed 0, 2 threads.
4. Writes safetensors + tokenizer + provenance.json into tinker_nb/assets/tiny-llama/.

Usage: python scripts/make_tiny_llama.py [--steps N] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinker_nb.engine.demo_data import demo_records, health_leaflets, health_sentences, story_corpus  # noqa: E402

SEQ = 128
VOCAB = 2048
LEAFLETS = 20_000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--quick", action="store_true", help="20 steps, for a smoke run")
    ap.add_argument("--out", default=str(ROOT / "tinker_nb" / "assets" / "tiny-llama"))
    args = ap.parse_args()
    steps = 20 if args.quick else args.steps

    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    t_start = time.time()

    stories = story_corpus(60_000, seed=0) + health_sentences(2_000, seed=0) + health_leaflets(LEAFLETS, seed=0)
    random.Random(0).shuffle(stories)
    held_out = stories[:500]
    train_text = stories[500:]
    tok_text = train_text + demo_records(3_000, seed=12345)
    corpus_bytes = "\n".join(train_text).encode()
    corpus_sha = hashlib.sha256(corpus_bytes).hexdigest()

    # -- tokenizer -----------------------------------------------------------------------------
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tok_text, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   model_max_length=256)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)

    # -- data: packed sequences ------------------------------------------------------------------
    eos = fast.eos_token_id
    ids: list[int] = []
    for text in train_text:
        ids.extend(fast(text)["input_ids"] + [eos])
    data = torch.tensor(ids[: (len(ids) // SEQ) * SEQ]).view(-1, SEQ)
    held = []
    for text in held_out:
        held.extend(fast(text)["input_ids"] + [eos])
    held = torch.tensor(held[: (len(held) // SEQ) * SEQ]).view(-1, SEQ)

    # -- model -----------------------------------------------------------------------------------
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=fast.bos_token_id, eos_token_id=eos,
                      pad_token_id=fast.pad_token_id, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    warm = max(1, steps // 20)
    losses = []
    model.train()
    for step in range(steps):
        lr = args.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        idx = torch.randint(0, data.shape[0], (args.batch,), generator=g)
        batch = data[idx]
        logits = model(input_ids=batch).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  lr {lr:.2e}  {time.time() - t_start:.0f}s", flush=True)
    model.eval()
    with torch.no_grad():
        hl = []
        for i in range(0, held.shape[0], 32):
            b = held[i:i + 32]
            lg = model(input_ids=b).logits[:, :-1]
            hl.append(float(torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), b[:, 1:].reshape(-1))))
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    script_sha = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    data_sha = hashlib.sha256((ROOT / "tinker_nb" / "engine" / "demo_data.py").read_bytes()).hexdigest()
    prov = {
        "name": "tinker-nb/tiny-llama",
        "script": "scripts/make_tiny_llama.py", "script_sha256": script_sha,
        "corpus_generator": "tinker_nb/engine/demo_data.py", "corpus_generator_sha256": data_sha,
        "corpus": {"stories": 60_000, "health_sentences": 2_000, "health_leaflets": LEAFLETS, "held_out": len(held_out),
                   "train_sha256": corpus_sha, "train_bytes": len(corpus_bytes), "train_tokens": int(data.numel())},
        "tokenizer": {"type": "byte-level BPE", "vocab_size": len(fast), "trained_on": "train corpus + 3,000 demo notes",
                      "special_tokens": ["<pad>", "<s>", "</s>"]},
        "model": {"architecture": "LlamaForCausalLM", "hidden_size": 256, "layers": 4, "heads": 4,
                  "intermediate_size": 688, "max_position_embeddings": 256, "tied_embeddings": True,
                  "parameters": n_params},
        "training": {"steps": steps, "batch": args.batch, "seq_len": SEQ, "lr": args.lr, "schedule": "warmup+cosine",
                     "optimizer": "AdamW(0.9,0.95,wd=0.1)", "seed": 0, "threads": 2,
                     "final_train_loss_mean_last_20": sum(losses[-20:]) / len(losses[-20:]),
                     "held_out_loss": sum(hl) / len(hl), "wall_seconds": round(time.time() - t_start, 1)},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(json.dumps(prov["training"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
