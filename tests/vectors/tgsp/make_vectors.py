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
- ``expected.json``: digests and intermediate values a third-party implementation can compare against;
- ``bad/*.tgsp`` + ``bad/index.json``: the sample with its zip framing broken one rule of spec §2 at a
  time (every signed byte unchanged); every verifier must refuse each. ``--bad-only`` rewrites just
  these from the committed ``sample.tgsp`` (no training, no torch).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASSPHRASE = "tgsp-test-vector"


def seeds() -> tuple[bytes, bytes, bytes]:
    pub = hashlib.sha512(b"tinker-nb TGSP v1 test vector: publisher").digest()  # ML-DSA seed ‖ Ed25519 key
    rec = hashlib.sha512(b"tinker-nb TGSP v1 test vector: recipient ML-KEM seed").digest()  # 64-byte ML-KEM seed
    x = hashlib.sha256(b"tinker-nb TGSP v1 test vector: recipient X25519").digest()
    return pub, rec, x


ENTRIES = ("manifest.json", "manifest.sig", "weights.enc", "recipients.json", "evidence.json", "dp_certificate.json")
DOS_DATE_1980 = (0 << 9) | (1 << 5) | 1  # 1980-01-01; time 00:00:00 = 0


def zip_bytes(entries: dict, *, order=ENTRIES, local_extra=None, central_extra=None, comment=None,
              local_patch=None, flags=None, trailing=b"") -> bytes:
    """The TGSP v1 zip framing of spec §2, written out field by field (what tinker_nb's writer emits).

    The keyword arguments break one rule at a time for the ``bad/`` vectors.
    """
    out, central = bytearray(), bytearray()
    for name in order:
        data, n = entries[name], name.encode()
        crc, fl = zlib.crc32(data), (flags or {}).get(name, 0)
        lf = {"flags": fl, "method": 0, "time": 0, "date": DOS_DATE_1980, "crc": crc, "csize": len(data),
              "usize": len(data), **(local_patch or {}).get(name, {})}
        lx = (local_extra or {}).get(name, b"")
        off = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, lf["flags"], lf["method"], lf["time"], lf["date"],
                           lf["crc"], lf["csize"], lf["usize"], len(n), len(lx)) + n + lx + data
        cx, cc = (central_extra or {}).get(name, b""), (comment or {}).get(name, b"")
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (3 << 8) | 20, 20, fl, 0, 0, DOS_DATE_1980, crc,
                               len(data), len(data), len(n), len(cx), len(cc), 0, 0, 0o644 << 16, off) + n + cx + cc
    cd_off = len(out)
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(order), len(order), len(central), cd_off, 0)
    return bytes(out) + trailing


HIDDEN = b"\xca\xfe\x08\x00unsigned"  # an extra field: id 0xFECA, 8 bytes of data
BAD = {  # file -> (keyword arguments of zip_bytes, the rule of spec §2 it breaks)
    "trailing-bytes.tgsp": ({"trailing": b"unsigned bytes after the end record"}, "bytes after the end record"),
    "local-extra.tgsp": ({"local_extra": {"manifest.sig": HIDDEN}}, "extra field in a local header"),
    "central-extra.tgsp": ({"central_extra": {"evidence.json": HIDDEN}}, "extra field in the central directory"),
    "entry-comment.tgsp": ({"comment": {"weights.enc": b"unsigned comment"}}, "entry comment"),
    "local-method.tgsp": ({"local_patch": {"recipients.json": {"method": 8}}}, "local method differs"),
    "local-crc.tgsp": ({"local_patch": {"evidence.json": {"crc": 0}}}, "local CRC-32 differs"),
    "local-size.tgsp": ({"local_patch": {"dp_certificate.json": {"usize": 1}}}, "local size differs"),
    "local-flags.tgsp": ({"local_patch": {"manifest.json": {"flags": 8}}}, "local data-descriptor flag"),
    "local-time.tgsp": ({"local_patch": {"manifest.json": {"time": 1}}}, "local time differs"),
    "flags.tgsp": ({"flags": {"weights.enc": 0x800}}, "general-purpose flags not 0"),
    "out-of-order.tgsp": ({"order": ENTRIES[1:] + ENTRIES[:1]}, "entries not in the fixed order"),
}


def write_bad_vectors() -> None:
    with zipfile.ZipFile(HERE / "sample.tgsp") as z:
        entries = {n: z.read(n) for n in ENTRIES}
    if zip_bytes(entries) != (HERE / "sample.tgsp").read_bytes():
        raise SystemExit("sample.tgsp is not framed as spec §2 says; fix the writer or the spec first")
    bad = HERE / "bad"
    bad.mkdir(exist_ok=True)
    index = {}
    for name, (kw, rule) in BAD.items():
        (bad / name).write_bytes(zip_bytes(entries, **kw))
        index[name] = rule
    (bad / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(BAD)} malformed packages to {bad}", file=sys.stderr)


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
    if "--bad-only" not in sys.argv[1:]:
        main()
    write_bad_vectors()
