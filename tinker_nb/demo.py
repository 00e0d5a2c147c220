"""`make demo`: DP LoRA fine-tuning of the embedded model, headless, offline.

Trains on synthetic private-domain records (clinical notes) with Poisson sampling and DP-SGD, prints
loss and ε as it goes, measures a held-out loss (non-private diagnostic) and samples before and after,
saves an encrypted checkpoint and verifies the audit ledger.
Run: ``python -m tinker_nb.demo [--steps N] [--workspace DIR]``.

The same settings (``DEMO``) and helpers (:func:`heldout_loss`, :func:`demo_split`) drive notebook 01.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Any

__all__ = ["DEMO", "PROMPTS", "SAMPLING", "demo_split", "dp_config_for", "heldout_loss", "main"]

#: The tuned demo run: the after-samples read like the private notes at ε = 8 (see docs/NOTEBOOK.md).
DEMO: dict[str, Any] = {
    "records": 8000,       # private training records (synthetic clinical notes)
    "heldout": 200,        # held-out notes from the same generator, never trained on
    "steps": 40,           # DP optimizer steps
    "batch": 256,          # expected Poisson batch size (q = batch / records = 0.032): large batches, less noise per step
    "lr": 1e-2,            # AdamW learning rate of the adapter
    "rank": 8,             # LoRA rank (alpha = 2 * rank), attention and MLP projections
    "epsilon": 8.0,        # target ε at δ = 1e-5
    "delta": 1e-5,
    "max_seq_len": 64,
}
PROMPTS = ["Patient note:", "Patient note: 58 year old female reports"]
#: How the demo and notebook 01 sample before/after: seeded, so both are reproducible and comparable
#: (greedy decoding of a small model collapses to one repeated token or a lone ".").
SAMPLING: dict[str, Any] = {"max_tokens": 40, "temperature": 0.7, "top_p": 0.9, "seed": 0}


def demo_split(n_train: int | None = None, n_heldout: int | None = None) -> tuple[list[str], list[str]]:
    """(training records, held-out records): disjoint synthetic notes from the same generator."""
    from .engine.demo_data import demo_records

    n_train = DEMO["records"] if n_train is None else n_train
    n_heldout = DEMO["heldout"] if n_heldout is None else n_heldout
    train = demo_records(n_train, seed=0)
    seen = set(train)
    held = [r for r in demo_records(n_heldout * 2 + 50, seed=1) if r not in seen][:n_heldout]
    return train, held


def dp_config_for(*, records: int, batch: int, steps: int, epsilon: float, delta: float = 1e-5):
    """The DPConfig of a planned run, from the budget planner: σ rounded up so every step fits ε."""
    from . import DPConfig
    from .notebook.planner import plan

    p = plan(dataset_size=records, batch_size=batch, epochs=steps * batch / records, target_epsilon=epsilon,
             delta=delta)
    return DPConfig(noise_multiplier=p.noise_multiplier, max_grad_norm=1.0, target_epsilon=p.target_epsilon,
                    target_delta=p.delta)


def heldout_loss(tc: Any, texts: list[str], *, chunk: int = 50) -> float:
    """Mean loss per token on ``texts`` (no gradients, no ε spent).

    A diagnostic for the data owner, **not differentially private**: it reads the held-out texts in
    the clear. Use held-out data you may look at, never the private training set's loss as a claim.
    """
    total, tokens = 0.0, 0
    for i in range(0, len(texts), chunk):
        r = tc.forward(texts[i:i + chunk])
        total += float(sum(r.losses))
        tokens += sum(len(t) for t in r.tokens)
    return total / tokens if tokens else math.nan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinker_nb.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=DEMO["steps"], help=f"DP optimizer steps (default {DEMO['steps']})")
    ap.add_argument("--records", type=int, default=DEMO["records"],
                    help=f"synthetic private records (default {DEMO['records']})")
    ap.add_argument("--workspace", default=None, help="workspace folder (default: a fresh temporary one)")
    ap.add_argument("--epsilon", type=float, default=DEMO["epsilon"], help=f"target ε (default {DEMO['epsilon']:g})")
    ap.add_argument("--batch", type=int, default=DEMO["batch"],
                    help=f"expected Poisson batch size (default {DEMO['batch']})")
    ap.add_argument("--lr", type=float, default=DEMO["lr"],
                    help=f"AdamW learning rate for the adapter (default {DEMO['lr']:g})")
    ap.add_argument("--rank", type=int, default=DEMO["rank"], help=f"LoRA rank (default {DEMO['rank']})")
    ap.add_argument("--heldout", type=int, default=DEMO["heldout"],
                    help=f"held-out notes for the before/after loss (default {DEMO['heldout']}; 0 = skip)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    from tinker_nb import LoRAConfig, ServiceClient, TrainingConfig

    workspace = args.workspace or tempfile.mkdtemp(prefix="tinker-nb-demo-")
    if args.workspace is None:
        os.environ.setdefault("TINKER_NB_KEY_DIR", os.path.join(workspace, "..", os.path.basename(workspace) + "-keys"))
    records, held = demo_split(args.records, args.heldout)
    epochs = args.steps * args.batch / len(records)
    t0 = time.perf_counter()
    service = ServiceClient(workspace)
    tc = service.create_training_client(TrainingConfig(
        model_ref="tinker-nb/tiny-llama",
        lora_config=LoRAConfig(rank=args.rank, alpha=2 * args.rank),
        dp_config=dp_config_for(records=len(records), batch=args.batch, steps=args.steps, epsilon=args.epsilon,
                                delta=DEMO["delta"]),
        batch_size=args.batch, learning_rate=args.lr, epochs=epochs, max_seq_len=DEMO["max_seq_len"]))
    info = tc.attach_dataset(records)
    print(f"tinker_nb demo: {len(records)} private records, q={info['sample_rate']:.3f}, "
          f"σ={info['noise_multiplier']:.4g} planned for ε={args.epsilon:g} over {args.steps} steps "
          f"(load {time.perf_counter() - t0:.1f}s)", flush=True)
    before = tc.sample(PROMPTS, **SAMPLING)
    h_before = heldout_loss(tc, held) if held else math.nan
    t_train = time.perf_counter()
    losses = []
    for i, b in enumerate(tc.poisson_batches(steps=args.steps), 1):
        fb = tc.forward_backward(b)
        step = tc.optim_step()
        r = fb.result()
        if not r.noise_only:
            losses.append(r.loss)
        if i % max(1, args.steps // 10) == 0 or i == 1:
            eps_live = step.result().epsilon_live or 0.0
            recent = sum(losses[-10:]) / max(1, len(losses[-10:]))
            print(f"  step {i:4d}/{args.steps}  loss {recent:6.3f}  ε(live bound) {eps_live:6.3f}  batch {r.examples:3d}"
                  f"  {time.perf_counter() - t_train:6.1f}s", flush=True)
    train_s = time.perf_counter() - t_train
    m = tc.get_dp_metrics()
    after = tc.sample(PROMPTS, **SAMPLING)
    h_after = heldout_loss(tc, held) if held else math.nan
    print(f"trained {m.steps} DP steps in {train_s:.1f}s; training loss {sum(losses[:5]) / 5:.3f} -> "
          f"{sum(losses[-5:]) / 5:.3f} (non-private diagnostic)")
    if held:
        print(f"held-out loss per token on {len(held)} unseen notes: {h_before:.3f} -> {h_after:.3f} "
              "(non-private diagnostic)")
    print(f"privacy: ε = {m.epsilon_spent:.3f} ({m.accountant.upper()}, δ={m.delta:g}; RDP bound "
          f"{m.epsilon_rdp:.3f}), remaining {m.epsilon_remaining:.3f} of {m.target_epsilon:g}, sampling={m.sampling}")
    for p, b_, a in zip(PROMPTS, before.samples, after.samples):
        print(f"  prompt {p!r}\n    before: {b_.completion!r}\n    after:  {a.completion!r}")
    saved = tc.save_state("demo-final", metadata={"demo": True})
    print(f"saved encrypted checkpoint {saved.artifact_id} ({saved.encryption.algorithm})")
    report = tc.audit_log().verify()
    print(f"audit ledger: {report.entries_checked} entries, ok={report.ok}")
    tc.close()
    print(f"workspace: {workspace}  (total {time.perf_counter() - t0:.1f}s)")
    return 0 if report.ok and losses and losses[-1] == losses[-1] else 1


if __name__ == "__main__":
    sys.exit(main())
