"""Shared helpers for the TGSP tests: a real tiny DP run packaged for two recipients, zip rewriting, re-signing."""

from __future__ import annotations

import base64
import hashlib
import json
import warnings
import zipfile
from pathlib import Path

from tinker_nb.canonical import canonical_json
from tinker_nb.tgsp import format as F

RECORDS = ["the cat sat on the mat", "patient reports mild headache", "the dog ran to the park",
           "a small bird sang in the old tree", "the printer on floor two is broken"] * 8
PROMPTS = ["the cat", "patient"]
BLOCK_HEAVY = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


def make_run(tiny_model: str, d: Path) -> dict:
    """Train 4 DP steps, package for alice and bob, save a checkpoint; returns everything the tests need."""
    from peft import get_peft_model_state_dict

    from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig
    from tinker_nb.security.kem import RecipientIdentity
    from tinker_nb.security.signing import HybridSigner

    svc = ServiceClient(d / "ws", passphrase="pw")
    tc = svc.create_training_client(TrainingConfig(
        model_ref=tiny_model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj")),
        dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_epsilon=30.0, target_delta=1e-3),
        batch_size=4, learning_rate=5e-2))
    tc.attach_dataset(RECORDS)
    for b in tc.poisson_batches(steps=4):
        tc.forward_backward(b)
        tc.optim_step()
    publisher = HybridSigner.generate()
    alice, bob, eve = RecipientIdentity.generate(), RecipientIdentity.generate(), RecipientIdentity.generate()
    pkg = d / "model.tgsp"
    manifest = tc.package(pkg, recipients=[alice.public_key(), bob.public_key()], signer=publisher)
    samples = [s.tokens for s in tc.sample(PROMPTS, max_tokens=8).samples]
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(tc.session.model).items()}
    metrics = tc.get_dp_metrics()
    saved = tc.save_state("after-4-steps")
    tc.close()
    pub_file = d / "publisher.pub"
    publisher.public_key().save(pub_file)
    return dict(dir=d, svc=svc, pkg=pkg, manifest=manifest, publisher=publisher, pub_file=pub_file, alice=alice,
                bob=bob, eve=eve, samples=samples, state=state, metrics=metrics, model=tiny_model,
                artifact_id=saved.artifact_id)


def rewrite(src: Path, dst: Path, *, replace: dict | None = None, extra: dict | None = None, drop: str | None = None,
            dup: str | None = None, compress: str | None = None) -> Path:
    """Copy a package's zip with entries replaced (name -> fn(bytes)), added, dropped, duplicated or deflated."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in z.infolist():
            if drop == i.filename:
                continue
            data = z.read(i)
            if replace and i.filename in replace:
                data = replace[i.filename](data)
            ctype = zipfile.ZIP_DEFLATED if compress == i.filename else zipfile.ZIP_STORED
            out.writestr(i.filename, data, compress_type=ctype)
            if dup == i.filename:
                out.writestr(i.filename, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return dst


def resign(src: Path, dst: Path, signer, *, docs: dict | None = None, manifest_edit=None) -> Path:
    """Rebuild a package with edited JSON entries (name -> fn(dict)), fresh digests, and a VALID signature.

    Models an insider holding the publisher key: only the semantic checks can catch what it changes.
    """
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in F.ENTRIES}
    for name, fn in (docs or {}).items():
        entries[name] = canonical_json(fn(json.loads(entries[name])))
    m = json.loads(entries[F.MANIFEST])
    for name in F.HASHED:
        m["entries"][name] = {"sha256": hashlib.sha256(entries[name]).hexdigest(), "size": len(entries[name])}
    if manifest_edit:
        manifest_edit(m)
    entries[F.MANIFEST] = canonical_json(m)
    entries[F.SIGNATURE] = canonical_json({"algorithm": "MLDSA65-Ed25519-SHA512", "key_id": signer.key_id,
                                           "signature": base64.b64encode(signer.sign(entries[F.MANIFEST],
                                                                                     context=b"tgsp/v1")).decode()})
    from tinker_nb.tgsp.container import write_container

    return write_container(dst, entries)


def flip(data: bytes, at: int | None = None) -> bytes:
    i = len(data) // 2 if at is None else at
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
