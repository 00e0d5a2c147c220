"""Checkpoint encryption, audit ledger and signing/sealing costs, each against its baseline."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import inverse, scaled, summary


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_section(*, sizes_mb: list[int], repeats: dict[int, int] | int = 5) -> dict[str, Any]:
    """save/load through the encrypted store vs plain safetensors save/load of the same tensors;
    storage AES-GCM throughput vs one-shot AES-256-GCM on one buffer (the raw rate).

    Each repeat times the plain and the encrypted operation back to back, so every ratio is a median of
    per-repeat ratios with its bootstrap interval.
    """
    import io

    import torch
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save
    from safetensors.torch import save_file

    from tinker_nb.security.aead import encrypt_stream
    from tinker_nb.security.keys import Keystore
    from tinker_nb.storage import ArtifactStore

    out: dict[str, Any] = {"sizes": {}, "headline": []}
    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault("TINKER_NB_KEY_DIR", str(Path(d) / "keys"))
        ks = Keystore.open(Path(d) / "ws", passphrase="bench")
        ks.create_tenant("bench")
        store = ArtifactStore(Path(d) / "ws", ks, tenant="bench")
        for mb in sizes_mb:
            reps = repeats.get(mb, 5) if isinstance(repeats, dict) else repeats
            n = mb * (1 << 20) // 4
            tensors = {"w": torch.randn(n)}
            buf = os.urandom(mb << 20)
            key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
            t_ps, t_pl, t_es, t_el, t_raw, t_ours = [], [], [], [], [], []
            for _ in range(reps):
                p = Path(d) / "plain.safetensors"
                # Baseline: a durable plain checkpoint (safetensors file, then fsync), as save_state is durable.
                t = time.perf_counter()
                save_file(tensors, p)
                _fsync(p)
                t_ps.append(time.perf_counter() - t)
                t = time.perf_counter()
                info = store.save("b", {"w.safetensors": st_save(tensors)})
                t_es.append(time.perf_counter() - t)
                # Read every byte (load_file alone maps the file lazily and would time almost nothing).
                t = time.perf_counter()
                st_load(p.read_bytes())
                t_pl.append(time.perf_counter() - t)
                t = time.perf_counter()
                blobs, _, _ = store.load(info.artifact_id)
                st_load(blobs["w.safetensors"])
                t_el.append(time.perf_counter() - t)
                store.delete(info.artifact_id)
                t = time.perf_counter()
                AESGCM(key).encrypt(nonce, buf, None)
                t_raw.append(time.perf_counter() - t)
                sink = io.BytesIO()
                t = time.perf_counter()
                encrypt_stream(key, [buf], sink, context=b"bench")
                t_ours.append(time.perf_counter() - t)
            r = {"repeats": reps,
                 "plain_save_ms": scaled(summary(t_ps, kind="absolute", unit="s"), 1000, "ms"),
                 "plain_load_ms": scaled(summary(t_pl, kind="absolute", unit="s"), 1000, "ms"),
                 "encrypted_save_ms": scaled(summary(t_es, kind="absolute", unit="s"), 1000, "ms"),
                 "encrypted_load_ms": scaled(summary(t_el, kind="absolute", unit="s"), 1000, "ms"),
                 "raw_aesgcm_MBps": inverse(summary(t_raw, kind="absolute", unit="s"), mb, "MB/s"),
                 "storage_aead_MBps": inverse(summary(t_ours, kind="absolute", unit="s"), mb, "MB/s"),
                 "save_ratio": summary([a / b for a, b in zip(t_es, t_ps)], kind="ratio"),
                 "load_ratio": summary([a / b for a, b in zip(t_el, t_pl)], kind="ratio"),
                 # rate fraction = raw time / our time, per repeat
                 "aead_fraction_of_raw": summary([a / b for a, b in zip(t_raw, t_ours)], kind="ratio")}
            out["sizes"][f"{mb}MB"] = r
            out["headline"] += [
                (f"save_state / durable safetensors save, {mb} MB", r["save_ratio"], "<= 1.05" if mb >= 100 else None),
                (f"load_state / safetensors load, {mb} MB", r["load_ratio"], None),
                (f"storage AEAD / raw AES-GCM rate, {mb} MB", r["aead_fraction_of_raw"], ">= 0.70")]
    return out


def ledger_section(*, n: int, verify_repeats: int = 3) -> dict[str, Any]:
    from tinker_nb.ledger import AuditLedger, verify_consistency, verify_inclusion
    from tinker_nb.security.signing import HybridSigner

    with tempfile.TemporaryDirectory() as d:
        led = AuditLedger(Path(d) / "a.sqlite", tenant="b", signer=HybridSigner.generate())
        appends = []
        for i in range(200):
            t = time.perf_counter()
            led.append("optim_step", {"step": i}, summary={"step": i})
            appends.append(time.perf_counter() - t)
        # bulk-fill to n entries with valid chained rows (same code path as append, one transaction)
        import sqlite3
        from datetime import datetime, timezone

        from tinker_nb.canonical import canonical_json
        from tinker_nb.ledger.log import Entry, record_hash

        prev = led.head()
        rows = []
        for seq in range(200, n):
            e = Entry(seq, datetime.now(timezone.utc).isoformat(), "b", "forward_backward", "0" * 64, {"i": seq},
                      prev, "")
            e.record_hash = record_hash(e.body())
            rows.append(("b", seq, e.ts, e.operation, e.params_digest, canonical_json(e.summary).decode(), prev,
                         e.record_hash))
            prev = e.record_hash
        db = sqlite3.connect(led.path)
        db.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?)", rows)
        db.commit()
        db.close()
        led.checkpoint()
        verify_s = []
        for _ in range(verify_repeats):
            t = time.perf_counter()
            rep = led.verify()
            verify_s.append(time.perf_counter() - t)
            assert rep.ok
        t = time.perf_counter()
        ip = led.inclusion_proof(n // 3)
        ipt = time.perf_counter() - t
        iv = []
        for _ in range(50):
            t = time.perf_counter()
            ok = verify_inclusion(bytes.fromhex(ip["leaf_hash"]), n // 3, n, [bytes.fromhex(x) for x in ip["proof"]],
                                  bytes.fromhex(ip["root_hash"]))
            iv.append(time.perf_counter() - t)
        t = time.perf_counter()
        cp = led.consistency_proof(n // 2)
        cpt = time.perf_counter() - t
        t = time.perf_counter()
        ok2 = verify_consistency(n // 2, n, bytes.fromhex(cp["old_root"]), bytes.fromhex(cp["new_root"]),
                                 [bytes.fromhex(x) for x in cp["proof"]])
        cvt = time.perf_counter() - t
    append_ms = scaled(summary(appends, kind="absolute", unit="s"), 1000, "ms")
    rate = inverse(summary(verify_s, kind="absolute", unit="s"), n, "entries/s")
    iv_ms = scaled(summary(iv, kind="absolute", unit="s"), 1000, "ms")
    return {"entries": n, "append_ms": append_ms, "verify_entries_per_s": rate,
            "inclusion_proof_gen_s": ipt, "inclusion_verify_ms": iv_ms, "inclusion_proof_len": len(ip["proof"]),
            "consistency_proof_gen_s": cpt, "consistency_verify_s": cvt, "proofs_ok": ok and ok2,
            "headline": [("durable ledger append (ms)", append_ms, "<= 1"),
                         ("ledger verification (entries/s)", rate, ">= 200000"),
                         ("inclusion proof verify (ms)", iv_ms, None)]}


def signing_section(model_dir: str) -> dict[str, Any]:
    from tinker_nb.security.kem import RecipientIdentity, seal
    from tinker_nb.security.signing import HybridSigner

    s = HybridSigner.generate()
    pk = s.public_key()
    msg = os.urandom(4096)
    sign, verify = [], []
    for _ in range(40):
        t = time.perf_counter()
        sig = s.sign(msg, context=b"tgsp/v1")
        sign.append(time.perf_counter() - t)
        t = time.perf_counter()
        pk.verify(msg, sig, context=b"tgsp/v1")
        verify.append(time.perf_counter() - t)
    ident = RecipientIdentity.generate()
    seal_t, open_t = [], []
    for _ in range(40):
        t = time.perf_counter()
        c = seal(ident.public_key(), b"k" * 32, info=b"tgsp/v1")
        seal_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        ident.open(c, info=b"tgsp/v1")
        open_t.append(time.perf_counter() - t)
    pkg = _package_timings(model_dir, signer=s, recipient=ident)
    ms = {k: scaled(summary(v, kind="absolute", unit="s"), 1000, "ms")
          for k, v in (("composite_sign", sign), ("composite_verify", verify), ("hpke_seal", seal_t),
                       ("hpke_open", open_t))}
    return {**ms, "package": pkg,
            "headline": [("composite sign (ms)", ms["composite_sign"], None),
                         ("composite verify (ms)", ms["composite_verify"], None),
                         ("HPKE X-Wing seal (ms)", ms["hpke_seal"], None),
                         ("HPKE X-Wing open (ms)", ms["hpke_open"], None),
                         ("TGSP package build, embedded model (ms)", pkg["build_ms"], None),
                         ("TGSP verify, embedded model (ms)", pkg["verify_ms"], None),
                         ("TGSP verify / plain SHA-256 of the file", pkg["verify_vs_sha256"], None)]}


def _package_timings(model_dir: str, *, signer: Any, recipient: Any, repeats: int = 7) -> dict[str, Any]:
    """Build and verify a TGSP package of a (1-step DP) adapter on the model; baseline: hashing the file."""
    import hashlib

    from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig
    from tinker_nb.engine.demo_data import demo_records
    from tinker_nb.tgsp import verify_package

    build, verify, sha = [], [], []
    with tempfile.TemporaryDirectory() as ws:
        tc = ServiceClient(Path(ws) / "ws").create_training_client(TrainingConfig(
            model_ref=model_dir, lora_config=LoRAConfig(rank=8, alpha=16), batch_size=8,
            dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_delta=1e-5)))
        tc.attach_dataset(demo_records(200, seed=0))
        for b in tc.poisson_batches(steps=1):
            tc.forward_backward(b)
            tc.optim_step()
        trust = [signer.public_key()]
        for i in range(repeats):
            out = Path(ws) / f"m{i}.tgsp"
            t = time.perf_counter()
            tc.package(out, recipients=[recipient.public_key()], signer=signer)
            build.append(time.perf_counter() - t)
            t = time.perf_counter()
            verify_package(out, trust=trust)
            verify.append(time.perf_counter() - t)
            t = time.perf_counter()
            hashlib.sha256(out.read_bytes()).digest()
            sha.append(time.perf_counter() - t)
        size = out.stat().st_size
        tc.close()
    return {"bytes": size, "build_ms": scaled(summary(build, kind="absolute", unit="s"), 1000, "ms"),
            "verify_ms": scaled(summary(verify, kind="absolute", unit="s"), 1000, "ms"),
            "sha256_file_ms": scaled(summary(sha, kind="absolute", unit="s"), 1000, "ms"),
            "verify_vs_sha256": summary([a / b for a, b in zip(verify, sha)], kind="ratio")}
