"""`make demo`: DP LoRA fine-tuning of the embedded model, headless, offline.

Trains on synthetic private-domain records with Poisson sampling and DP-SGD, prints loss and ε as it
goes, samples before and after, saves an encrypted checkpoint and verifies the audit ledger.
Run: ``python -m tinker_nb.demo [--steps N] [--workspace DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinker_nb.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="DP optimizer steps (default 200, about a minute on 2 cores)")
    ap.add_argument("--records", type=int, default=2000, help="synthetic private records (default 2000)")
    ap.add_argument("--workspace", default=None, help="workspace folder (default: a fresh temporary one)")
    ap.add_argument("--epsilon", type=float, default=8.0, help="target ε (default 8)")
    ap.add_argument("--batch", type=int, default=64, help="expected Poisson batch size (default 64)")
    ap.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate for the adapter (default 1e-2)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig
    from tinker_nb.engine.demo_data import demo_records

    workspace = args.workspace or tempfile.mkdtemp(prefix="tinker-nb-demo-")
    if args.workspace is None:
        os.environ.setdefault("TINKER_NB_KEY_DIR", os.path.join(workspace, "..", os.path.basename(workspace) + "-keys"))
    records = demo_records(args.records, seed=0)
    batch = args.batch
    epochs = args.steps * batch / len(records)
    t0 = time.perf_counter()
    service = ServiceClient(workspace)
    tc = service.create_training_client(TrainingConfig(
        model_ref="tinker-nb/tiny-llama",
        lora_config=LoRAConfig(rank=8, alpha=16),
        dp_config=DPConfig(target_epsilon=args.epsilon, target_delta=1e-5, max_grad_norm=1.0),
        batch_size=batch, learning_rate=args.lr, epochs=epochs, max_seq_len=64))
    info = tc.attach_dataset(records)
    print(f"tinker_nb demo: {len(records)} private records, q={info['sample_rate']:.3f}, "
          f"σ calibrated to {info['noise_multiplier']:.3f} for ε={args.epsilon} over {args.steps} steps "
          f"(load {time.perf_counter() - t0:.1f}s)")
    prompts = [records[0].split(":")[0] + ":", "The patient"]
    before = tc.sample(prompts, max_tokens=24, temperature=0)
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
            print(f"  step {i:4d}  loss {recent:6.3f}  ε(live bound) {eps_live:6.3f}  batch {r.examples:3d}")
    train_s = time.perf_counter() - t_train
    m = tc.get_dp_metrics()
    after = tc.sample(prompts, max_tokens=24, temperature=0)
    print(f"trained {m.steps} DP steps in {train_s:.1f}s; loss {sum(losses[:5]) / 5:.3f} -> "
          f"{sum(losses[-5:]) / 5:.3f} (non-private diagnostic)")
    print(f"privacy: ε = {m.epsilon_spent:.3f} ({m.accountant.upper()}, δ={m.delta:g}; RDP bound "
          f"{m.epsilon_rdp:.3f}), remaining {m.epsilon_remaining:.3f} of {m.target_epsilon}, sampling={m.sampling}")
    for p, b_, a in zip(prompts, before.samples, after.samples):
        print(f"  prompt {p!r}\n    before: {b_.completion!r}\n    after:  {a.completion!r}")
    saved = tc.save_state("demo-final", metadata={"demo": True})
    print(f"saved encrypted checkpoint {saved.artifact_id} ({saved['encryption']['algorithm']})")
    report = tc.audit_log().verify()
    print(f"audit ledger: {report.entries_checked} entries, ok={report.ok}")
    tc.close()
    print(f"workspace: {workspace}  (total {time.perf_counter() - t0:.1f}s)")
    return 0 if report.ok and losses[-1] == losses[-1] else 1


if __name__ == "__main__":
    sys.exit(main())
