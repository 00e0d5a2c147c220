#!/usr/bin/env python3
"""Regenerate the TGSP v1 test vectors in this folder (run from the repository root, ~30 s on a CPU).

    .venv/bin/python tests/vectors/tgsp/make_vectors.py

A real 3-step DP-SGD run of the embedded ``tinker-nb/tiny-llama`` (LoRA rank 2 on q_proj/v_proj) on
public demo text, packaged for one recipient, valid for 100 years. The keys are derived from fixed
public seeds: they are TEST KEYS, never use them for anything else. Writes:

- ``sample.tgsp``: the package;
- ``publisher.pub`` / ``recipient.pub``: public key files; ``publisher.key`` / ``recipient.key``:
  the same keys passphrase-protected with passphrase ``tgsp-test-vector``;
- ``keys.json``: the raw private and public keys in hex (test only);
- ``expected.json``: digests and intermediate values a third-party implementation can compare against.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASSPHRASE = "tgsp-test-vector"


def seeds() -> tuple[bytes, bytes, bytes]:
    pub = hashlib.sha512(b"tinker-nb TGSP v1 test vector: publisher").digest()  # ML-DSA seed ‖ Ed25519 key
    rec = hashlib.sha512(b"tinker-nb TGSP v1 test vector: recipient ML-KEM seed").digest()  # 64-byte ML-KEM seed
    x = hashlib.sha256(b"tinker-nb TGSP v1 test vector: recipient X25519").digest()
    return pub, rec, x


def main() -> None:
    os.environ.setdefault("TINKER_NB_KEY_DIR", tempfile.mkdtemp(prefix="tgsp-vec-keys-"))
    from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig
    from tinker_nb.engine.demo_data import demo_records
    from tinker_nb.security.kem import RecipientIdentity
    from tinker_nb.security.signing import HybridSigner, message_representative
    from tinker_nb.tgsp import format as F
    from tinker_nb.tgsp.adapter import describe
    from tinker_nb.tgsp.package import unseal_adapter, verify_package

    pseed, rseed, xseed = seeds()
    publisher = HybridSigner.from_private_bytes(pseed[:64])
    recipient = RecipientIdentity(rseed, xseed)
    work = Path(tempfile.mkdtemp(prefix="tgsp-vec-"))
    svc = ServiceClient(work / "ws", passphrase="vector workspace")
    tc = svc.create_training_client(TrainingConfig(
        lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj")),
        dp_config=DPConfig(noise_multiplier=1.1, max_grad_norm=1.0, target_delta=1e-4),
        batch_size=16, learning_rate=1e-2, max_seq_len=64))
    tc.attach_dataset(demo_records(200, seed=0))
    for b in tc.poisson_batches(steps=3):
        tc.forward_backward(b)
        tc.optim_step()
    pkg = HERE / "sample.tgsp"
    manifest = tc.package(pkg, recipients=[recipient.public_key()], signer=publisher, expires_in_days=36500)
    tc.close()

    publisher.public_key().save(HERE / "publisher.pub")
    recipient.public_key().save(HERE / "recipient.pub")
    publisher.save(HERE / "publisher.key", passphrase=PASSPHRASE)
    recipient.save(HERE / "recipient.key", passphrase=PASSPHRASE)
    keys = {"WARNING": "TEST KEYS derived from public seeds; never use them for anything else.",
            "publisher": {"private_key": publisher._private_bytes().hex(),
                          "private_key_layout": "ML-DSA-65 seed (32 B) ‖ Ed25519 private key (32 B)",
                          "public_key": publisher.public_key().raw.hex(), "key_id": publisher.key_id},
            "recipient": {"private_key": recipient._private_bytes().hex(),
                          "private_key_layout": "ML-KEM-768 seed (64 B, d ‖ z) ‖ X25519 private key (32 B)",
                          "public_key": recipient.public_key().raw.hex(), "key_id": recipient.key_id}}
    (HERE / "keys.json").write_text(json.dumps(keys, indent=1) + "\n")

    rep = verify_package(pkg, trust=[publisher.public_key()])
    adapter, _, _ = unseal_adapter(pkg, identity=recipient, trust=[publisher.public_key()])
    with zipfile.ZipFile(pkg) as z:
        e = {n: z.read(n) for n in F.ENTRIES}
    stanza = json.loads(e[F.RECIPIENTS])["recipients"][0]
    package_key = recipient.open(base64.b64decode(stanza["sealed"]), info=F.HPKE_INFO,
                                 aad=manifest["package_id"].encode())
    m_prime = message_representative(e[F.MANIFEST], F.SIGN_CONTEXT)
    expected = {
        "package_id": manifest["package_id"],
        "entries": {n: {"sha256": hashlib.sha256(e[n]).hexdigest(), "size": len(e[n])} for n in F.ENTRIES},
        "manifest_sha256": hashlib.sha256(e[F.MANIFEST]).hexdigest(),
        "signature_m_prime_hex": m_prime.hex(),
        "hpke_info_hex": (b"tinker-nb/hpke/v1|" + len(F.HPKE_INFO).to_bytes(2, "big") + F.HPKE_INFO
                          + manifest["package_id"].encode()).hex(),
        "package_key_hex": package_key.hex(),
        "weights_context_hex": (F.WEIGHTS_CONTEXT_PREFIX + manifest["package_id"].encode()).hex(),
        "adapter_sha256": hashlib.sha256(adapter).hexdigest(), "adapter_size": len(adapter),
        "adapter_tensors": describe(adapter),
        "publisher_key_id": publisher.key_id, "recipient_key_id": recipient.key_id,
        "ledger_checkpoint": {k: rep.evidence["ledger_checkpoint"][k] for k in ("size", "root_hash", "key_id")},
        "proven_operations": rep.evidence["proven_operations"],
        "epsilon": rep.certificate["epsilon"], "epsilon_rdp": rep.certificate["epsilon_rdp"],
        "delta": rep.certificate["delta"],
        "greedy_sample": {"prompt": "Patient note:", "max_tokens": 12},
    }
    from tinker_nb.tgsp.edge import open_package

    edge = open_package(pkg, identity=recipient, trust=[publisher.public_key()])
    s = edge.sample(["Patient note:"], max_tokens=12).samples[0]
    expected["greedy_sample"].update(tokens=s.tokens, completion=s.completion)
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {pkg} ({pkg.stat().st_size} bytes) and its keys/expected values", file=sys.stderr)


if __name__ == "__main__":
    main()
