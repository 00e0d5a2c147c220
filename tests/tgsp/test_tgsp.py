"""TGSP packages: round trip for two recipients, every tampering refused and named, trust, expiry, zip attacks."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from datetime import datetime, timedelta, timezone

import pytest

from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig
from tinker_nb.errors import IntegrityError, KeyAccessError, PackageError, SignatureError, TrustError
from tinker_nb.security.kem import RecipientIdentity
from tinker_nb.security.signing import HybridSigner
from tinker_nb.tgsp import export_peft, open_package, verify_package
from tinker_nb.tgsp import format as F

RECORDS = ["the cat sat on the mat", "patient reports mild headache", "the dog ran to the park",
           "a small bird sang in the old tree", "the printer on floor two is broken"] * 8


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("tgsp")
    os.environ["TINKER_NB_KEY_DIR"] = str(d / "keys")
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
    session_samples = [s.tokens for s in tc.sample(["the cat", "patient"], max_tokens=8).samples]
    metrics = tc.get_dp_metrics()
    tc.close()
    return dict(dir=d, pkg=pkg, manifest=manifest, publisher=publisher, alice=alice, bob=bob, eve=eve,
                samples=session_samples, metrics=metrics, model=tiny_model)


def test_verify_report(built):
    rep = verify_package(built["pkg"], trust=[built["publisher"].public_key()])
    assert rep.ok and rep.package_id == built["manifest"]["package_id"]
    assert set(rep.recipients) == {built["alice"].key_id, built["bob"].key_id}
    assert rep.certificate["epsilon_stated"] == pytest.approx(built["metrics"].epsilon_spent)
    assert rep.certificate["epsilon_recomputed"] == pytest.approx(built["metrics"].epsilon_spent, rel=0.02)


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_open_as_each_recipient_gives_the_session_samples(built, who):
    edge = open_package(built["pkg"], identity=built[who], trust=[built["publisher"].public_key()])
    assert [s.tokens for s in edge.sample(["the cat", "patient"], max_tokens=8).samples] == built["samples"]


def test_not_a_recipient(built):
    with pytest.raises(KeyAccessError, match="not a recipient"):
        open_package(built["pkg"], identity=built["eve"], trust=[built["publisher"].public_key()])


def test_exported_peft_adapter_loads_with_peft_alone(built, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_peft(built["pkg"], tmp_path / "adapter", identity=built["alice"],
                      trust=[built["publisher"].public_key()])
    base = AutoModelForCausalLM.from_pretrained(built["model"])
    model = PeftModel.from_pretrained(base, str(out)).eval()
    tok = AutoTokenizer.from_pretrained(built["model"])
    ids = [tok.bos_token_id] + tok("the cat")["input_ids"]
    x = torch.tensor([ids])
    toks = []
    with torch.no_grad():
        for _ in range(8):
            nxt = int(model(input_ids=x).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            toks.append(nxt)
            x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
    assert toks == built["samples"][0]


def _rewrite(src, dst, *, replace=None, extra=None, drop=None, dup=None):
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for i in z.infolist():
            if drop == i.filename:
                continue
            data = z.read(i)
            if replace and i.filename in replace:
                data = replace[i.filename](data)
            out.writestr(i.filename, data)
            if dup == i.filename:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out.writestr(i.filename, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return dst


def _flip(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 1]) + data[mid + 1:]


@pytest.mark.parametrize("entry,err,named", [
    (F.WEIGHTS, IntegrityError, "weights.enc"),
    (F.RECIPIENTS, IntegrityError, "recipients.json"),
    (F.EVIDENCE, IntegrityError, "evidence.json"),
    (F.CERTIFICATE, IntegrityError, "dp_certificate.json"),
    (F.MANIFEST, SignatureError, "manifest.sig"),
])
def test_tampering_each_entry_is_named(built, tmp_path, entry, err, named):
    bad = _rewrite(built["pkg"], tmp_path / "bad.tgsp", replace={entry: _flip})
    with pytest.raises(err, match=named.replace(".", r"\.")):
        verify_package(bad, trust=[built["publisher"].public_key()])


@pytest.mark.parametrize("half", ["mldsa", "ed25519"])
def test_tampered_signature_halves(built, tmp_path, half):
    def tamper(data):
        d = json.loads(data)
        sig = bytearray(base64.b64decode(d["signature"]))
        sig[10 if half == "mldsa" else -5] ^= 1
        d["signature"] = base64.b64encode(bytes(sig)).decode()
        return json.dumps(d).encode()

    bad = _rewrite(built["pkg"], tmp_path / "bad.tgsp", replace={F.SIGNATURE: tamper})
    with pytest.raises(SignatureError, match="ML-DSA-65" if half == "mldsa" else "Ed25519"):
        verify_package(bad, trust=[built["publisher"].public_key()])


def test_trust_store(built):
    with pytest.raises(TrustError, match="no trusted"):
        verify_package(built["pkg"], trust=[])
    with pytest.raises(TrustError, match="not in the trust store"):
        verify_package(built["pkg"], trust=[HybridSigner.generate().public_key()])


def test_expired(built):
    later = datetime.now(timezone.utc) + timedelta(days=400)
    with pytest.raises(TrustError, match="expired"):
        verify_package(built["pkg"], trust=[built["publisher"].public_key()], now=later)


@pytest.mark.parametrize("kind", ["zip-slip", "extra", "missing", "duplicate", "oversized", "not-zip"])
def test_zip_shape_attacks(built, tmp_path, kind):
    p = tmp_path / "bad.tgsp"
    if kind == "zip-slip":
        _rewrite(built["pkg"], p, extra={"../../evil.py": b"x"})
    elif kind == "extra":
        _rewrite(built["pkg"], p, extra={"notes.txt": b"x"})
    elif kind == "missing":
        _rewrite(built["pkg"], p, drop=F.EVIDENCE)
    elif kind == "duplicate":
        _rewrite(built["pkg"], p, dup=F.CERTIFICATE)
    elif kind == "oversized":
        _rewrite(built["pkg"], p, replace={F.CERTIFICATE: lambda d: d + b" " * (2 << 20)})
    else:
        p.write_bytes(b"not a zip")
    with pytest.raises(PackageError):
        verify_package(p, trust=[built["publisher"].public_key()])


def test_understated_epsilon_is_caught(built, tmp_path):
    """A re-signed package whose certificate lies about ε still fails the recomputation."""
    from tinker_nb.canonical import canonical_json
    from tinker_nb.tgsp.certificate import check_certificate

    with zipfile.ZipFile(built["pkg"]) as z:
        cert = json.loads(z.read(F.CERTIFICATE))
    cert["epsilon"] = cert["epsilon"] / 10
    with pytest.raises(IntegrityError, match="stated"):
        check_certificate(json.loads(canonical_json(cert)))


def test_manifest_signature_verifies_with_independent_implementations(built):
    """Follow only docs/TGSP_SPEC.md: pqcrypto ML-DSA-65 + cryptography Ed25519 over M'."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from pqcrypto.sign import ml_dsa_65

    with zipfile.ZipFile(built["pkg"]) as z:
        manifest, sig = z.read(F.MANIFEST), json.loads(z.read(F.SIGNATURE))
    raw = base64.b64decode(sig["signature"])
    pk = built["publisher"].public_key().raw
    label = b"COMPSIG-MLDSA65-Ed25519-SHA512"
    ctx = b"tgsp/v1"
    m_prime = b"CompositeAlgorithmSignatures2025" + label + bytes([len(ctx)]) + ctx + hashlib.sha512(manifest).digest()
    ml_dsa_65.verify(pk[:1952], m_prime, raw[:3309], context=label)
    Ed25519PublicKey.from_public_bytes(pk[1952:]).verify(raw[3309:], m_prime)
    for name, digest in json.loads(manifest)["entries"].items():
        with zipfile.ZipFile(built["pkg"]) as z:
            assert hashlib.sha256(z.read(name)).hexdigest() == digest


def test_verification_never_imports_torch(built, tmp_path):
    pub = tmp_path / "pub.json"
    built["publisher"].public_key().save(pub)
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch.") or name == "opacus":
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        from tinker_nb.security.signing import load_public_key
        from tinker_nb.tgsp import verify_package
        rep = verify_package({str(built["pkg"])!r}, trust=[load_public_key({str(pub)!r})])
        assert rep.ok and "torch" not in sys.modules
        print("verified without torch")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "verified without torch" in out.stdout
