"""TGSP packages: round trip for two recipients, every tampering refused and named, trust, expiry, zip attacks,
insider lies caught by the semantic checks, checkpoint packaging, torch-free verification, opacus-free opening."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import zipfile
from datetime import datetime, timedelta, timezone

import pytest

from tinker_nb.errors import ConfigError, IntegrityError, KeyAccessError, PackageError, SignatureError, TrustError
from tinker_nb.security.signing import HybridSigner
from tinker_nb.tgsp import (
    export_peft,
    inspect_package,
    open_package,
    package_checkpoint,
    unseal_adapter,
    verify_package,
)
from tinker_nb.tgsp import format as F

from .helpers import BLOCK_HEAVY, PROMPTS, flip, resign, rewrite


def _trust(built):
    return [built["publisher"].public_key()]


# ---------------------------------------------------------------------- round trip
def test_verify_report(built):
    rep = verify_package(built["pkg"], trust=_trust(built))
    assert rep.ok and rep.package_id == built["manifest"]["package_id"]
    assert rep.publisher_key_id == built["publisher"].key_id
    assert set(rep.recipients) == {built["alice"].key_id, built["bob"].key_id}
    cert = rep.certificate
    assert cert["dp"] and cert["steps"] == 4 and cert["accounting_valid"]
    assert cert["epsilon"] == pytest.approx(built["metrics"].epsilon_spent, rel=1e-9)
    assert cert["epsilon_recomputed"] == pytest.approx(cert["epsilon"], rel=1e-6)
    assert cert["epsilon_rdp"] >= cert["epsilon"]  # RDP is the looser bound
    ev = rep.evidence
    assert set(ev["proven_operations"]) == {"create_training_client", "attach_dataset", "optim_step"}
    assert ev["dataset_size"] == 40 and ev["unproven_operations"] == []
    assert any("ML-DSA-65 and Ed25519" in c for c in rep.checks)
    assert rep.base_model["weights"]  # the base weights are pinned by digest
    assert json.loads(json.dumps(rep.to_dict()))["ok"] is True and "VERIFIED" in str(rep)


def test_trust_accepts_key_files(built):
    assert verify_package(built["pkg"], trust=str(built["pub_file"])).ok
    assert verify_package(built["pkg"], trust=[built["pub_file"]]).ok
    assert verify_package(built["pkg"], trust=built["publisher"]).ok  # a bare signer: its public key


def test_base_model_file_names_must_be_plain(built, tmp_path):
    from tinker_nb.tgsp.edge import check_base_model

    m = json.loads(zipfile.ZipFile(built["pkg"]).read(F.MANIFEST))
    for name in ("../config.json", "/etc/passwd", ".hidden", "a\\b"):
        bad = {**m, "base_model": {**m["base_model"], "weights": {name: "0" * 64}}}
        with pytest.raises(IntegrityError, match="plain file name"):
            check_base_model(bad, base_model_path=tmp_path)


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_open_as_each_recipient_gives_the_session_samples(built, who):
    edge = open_package(built["pkg"], identity=built[who], trust=_trust(built))
    assert [s.tokens for s in edge.sample(PROMPTS, max_tokens=8).samples] == built["samples"]


def test_packaged_adapter_is_the_peft_state_dict(built):
    import torch
    from safetensors.torch import load as st_load

    adapter, _manifest, _ = unseal_adapter(built["pkg"], identity=built["alice"], trust=_trust(built))
    tensors = st_load(adapter)
    assert set(tensors) == set(built["state"]) and all(torch.equal(tensors[k], built["state"][k]) for k in tensors)


def test_not_a_recipient(built):
    with pytest.raises(KeyAccessError, match=r"recipients.json: .*not a recipient"):
        open_package(built["pkg"], identity=built["eve"], trust=_trust(built))


def test_exported_peft_adapter_loads_with_peft_alone(built, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_peft(built["pkg"], tmp_path / "adapter", identity=built["alice"], trust=_trust(built))
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                               "tgsp_provenance.json"}
    assert (out / "adapter_model.safetensors").stat().st_mode & 0o077 == 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(built["model"]), str(out)).eval()
    tok = AutoTokenizer.from_pretrained(built["model"])
    for prompt, want in zip(PROMPTS, built["samples"]):
        x = torch.tensor([[tok.bos_token_id] + tok(prompt)["input_ids"]])
        toks = []
        with torch.no_grad():
            for _ in range(8):
                nxt = int(model(input_ids=x).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                toks.append(nxt)
                x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
        assert toks == want
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_peft(built["pkg"], out, identity=built["alice"], trust=_trust(built))


def test_base_model_must_match_the_signed_digests(built, tmp_path):
    import shutil

    other = tmp_path / "base"
    shutil.copytree(built["model"], other)
    w = other / "model.safetensors"
    w.write_bytes(flip(w.read_bytes(), at=len(w.read_bytes()) - 3))
    with pytest.raises(IntegrityError, match=r"model.safetensors .* differs"):
        open_package(built["pkg"], identity=built["alice"], trust=_trust(built), base_model_path=other)
    with pytest.raises(ConfigError, match="not available locally"):
        open_package(built["pkg"], identity=built["alice"], trust=_trust(built), base_model_path=tmp_path / "nope")


# ---------------------------------------------------------------------- from a saved checkpoint
def test_package_from_checkpoint_has_the_same_adapter_and_proves_the_save(built, tmp_path):
    from tinker_nb.tgsp.session import package_checkpoint as pc

    assert pc is package_checkpoint
    out = tmp_path / "ckpt.tgsp"
    m = package_checkpoint(built["svc"], built["artifact_id"], out, recipients=[built["bob"].public_key()],
                           signer=built["publisher"])
    assert m["adapter"]["sha256"] == built["manifest"]["adapter"]["sha256"]
    rep = verify_package(out, trust=_trust(built))
    assert rep.evidence["source_checkpoint"] == {"artifact_id": built["artifact_id"], "name": "after-4-steps"}
    assert "save_state" in rep.evidence["proven_operations"]
    assert rep.certificate["epsilon"] == pytest.approx(built["metrics"].epsilon_spent, rel=1e-9)
    edge = open_package(out, identity=built["bob"], trust=_trust(built))
    assert [s.tokens for s in edge.sample(PROMPTS, max_tokens=8).samples] == built["samples"]
    ops = [e.operation for e in built["svc"].ledger.tail(1)]
    assert ops == ["package"]


def test_package_checkpoint_and_verify_without_torch(built, tmp_path):
    """Packaging a saved checkpoint and verifying need neither torch, transformers, peft nor opacus."""
    code = BLOCK_HEAVY.format(blocked=("torch", "opacus", "transformers", "peft")) + textwrap.dedent(f"""
        from tinker_nb import ServiceClient
        from tinker_nb.security.kem import RecipientIdentity
        from tinker_nb.security.signing import load_public_key
        from tinker_nb.tgsp import package_checkpoint, verify_package
        svc = ServiceClient({str(built["dir"] / "ws")!r}, passphrase="pw")
        m = package_checkpoint(svc, {built["artifact_id"]!r}, {str(tmp_path / "p.tgsp")!r},
                               recipients=[RecipientIdentity.generate().public_key()])
        pub = svc.ledger.signer.public_key()
        rep = verify_package({str(tmp_path / "p.tgsp")!r}, trust=[pub])
        assert rep.ok and rep.evidence["ledger_checkpoint"]["key_pinned"]
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "opacus", "transformers", "peft")]
        print("ok", rep.publisher_key_id == pub.key_id)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok True"  # default publisher = the workspace identity


def test_missing_accountant_is_a_setup_error_not_a_tampered_package(built):
    code = BLOCK_HEAVY.format(blocked=("dp_accounting",)) + textwrap.dedent(f"""
        from tinker_nb.errors import ConfigError
        from tinker_nb.tgsp import verify_package
        try:
            verify_package({str(built["pkg"])!r}, trust=[{str(built["pub_file"])!r}])
        except ConfigError as exc:
            print("config", "pip install dp-accounting" in str(exc))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "config True"


def test_verification_never_imports_torch(built):
    code = BLOCK_HEAVY.format(blocked=("torch", "opacus", "transformers", "peft")) + textwrap.dedent(f"""
        from tinker_nb.tgsp import verify_package, inspect_package
        rep = verify_package({str(built["pkg"])!r}, trust=[{str(built["pub_file"])!r}])
        inspect_package({str(built["pkg"])!r})
        assert rep.ok and "torch" not in sys.modules
        print("verified without torch")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "verified without torch" in out.stdout


def test_edge_loader_never_imports_opacus(built):
    code = BLOCK_HEAVY.format(blocked=("opacus",)) + textwrap.dedent(f"""
        from tinker_nb.security.kem import RecipientIdentity
        from tinker_nb.tgsp import open_package
        import base64
        ident = RecipientIdentity.from_private_bytes({built["alice"]._private_bytes()!r})
        edge = open_package({str(built["pkg"])!r}, identity=ident, trust=[{str(built["pub_file"])!r}])
        print(edge.sample({PROMPTS!r}, max_tokens=8).samples[0].tokens)
        assert "opacus" not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == built["samples"][0]


def test_non_dp_package_says_so_and_default_publisher_is_the_workspace(tiny_model, tmp_path):
    from tinker_nb import LoRAConfig, ServiceClient, TrainingConfig
    from tinker_nb.security.kem import RecipientIdentity

    from .helpers import RECORDS

    svc = ServiceClient(tmp_path / "ws")
    with svc.create_training_client(TrainingConfig(model_ref=tiny_model, batch_size=4, lora_config=LoRAConfig(
            rank=2, alpha=4, target_modules=("q_proj",)))) as tc:
        tc.attach_dataset(RECORDS)
        for b in tc.poisson_batches(steps=1):
            tc.forward_backward(b)
            tc.optim_step()
        tc.package(tmp_path / "plain.tgsp", recipients=RecipientIdentity.generate().public_key())
    rep = verify_package(tmp_path / "plain.tgsp", trust=[svc.ledger.signer.public_key()])
    assert rep.certificate["dp"] is False and "WITHOUT differential privacy" in rep.certificate["statement"]
    assert any("without DP" in w for w in rep.warnings)
    assert rep.evidence["ledger_checkpoint"]["key_pinned"]  # workspace identity = publisher = ledger key


# ---------------------------------------------------------------------- tampering
@pytest.mark.parametrize("entry,err", [
    (F.WEIGHTS, IntegrityError), (F.RECIPIENTS, IntegrityError), (F.EVIDENCE, IntegrityError),
    (F.CERTIFICATE, IntegrityError), (F.MANIFEST, SignatureError), (F.SIGNATURE, SignatureError),
])
def test_tampering_each_entry_is_refused_and_named(built, tmp_path, entry, err):
    def tamper(data: bytes) -> bytes:
        if entry == F.SIGNATURE:  # flip a byte of the signature itself, keep the JSON valid
            d = json.loads(data)
            d["signature"] = base64.b64encode(flip(base64.b64decode(d["signature"]))).decode()
            return json.dumps(d).encode()
        return flip(data)

    bad = rewrite(built["pkg"], tmp_path / "bad.tgsp", replace={entry: tamper})
    named = F.SIGNATURE if entry == F.MANIFEST else entry
    with pytest.raises(err, match=f"^{named.replace('.', '[.]')}: ") as ei:
        verify_package(bad, trust=_trust(built))
    assert ei.value.entry == named


def test_byte_flip_in_the_file_is_caught_by_the_zip_crc(built, tmp_path):
    raw = bytearray(built["pkg"].read_bytes())
    with zipfile.ZipFile(built["pkg"]) as z:
        info = z.getinfo(F.WEIGHTS)
    raw[info.header_offset + 30 + len(F.WEIGHTS) + 100] ^= 1  # inside weights.enc's data
    bad = tmp_path / "bad.tgsp"
    bad.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"weights.enc: entry is corrupt"):
        verify_package(bad, trust=_trust(built))


@pytest.mark.parametrize("half", ["ML-DSA-65", "Ed25519"])
def test_each_signature_half_must_verify(built, tmp_path, half):
    def tamper(data):
        d = json.loads(data)
        sig = base64.b64decode(d["signature"])
        d["signature"] = base64.b64encode(flip(sig, at=10 if half == "ML-DSA-65" else len(sig) - 5)).decode()
        return json.dumps(d).encode()

    bad = rewrite(built["pkg"], tmp_path / "bad.tgsp", replace={F.SIGNATURE: tamper})
    with pytest.raises(SignatureError, match=f"manifest.sig: .*the {half} half"):
        verify_package(bad, trust=_trust(built))


def test_swapping_in_another_packages_recipients_is_caught(built, tmp_path):
    """An attacker re-seals nothing: copying recipients.json from another package breaks its digest."""
    other = tmp_path / "other.tgsp"
    resign(built["pkg"], other, HybridSigner.generate())
    with zipfile.ZipFile(other) as z:
        theirs = z.read(F.RECIPIENTS)
    bad = rewrite(built["pkg"], tmp_path / "bad.tgsp", replace={F.RECIPIENTS: lambda d: theirs + b" "})
    with pytest.raises(IntegrityError, match=r"recipients.json"):
        verify_package(bad, trust=_trust(built))


# ---------------------------------------------------------------------- trust and time
def test_trust_store(built, tmp_path):
    with pytest.raises(TrustError, match="no trusted publisher keys"):
        verify_package(built["pkg"], trust=[])
    with pytest.raises(TrustError, match=r"manifest.sig: .*not in the trust store"):
        verify_package(built["pkg"], trust=[HybridSigner.generate().public_key()])
    with pytest.raises(TrustError, match="cannot load trusted publisher key"):
        verify_package(built["pkg"], trust=[tmp_path / "missing.pub"])
    # a package re-signed by another key (the key is even named in manifest.sig) is not trusted
    forged = resign(built["pkg"], tmp_path / "forged.tgsp", HybridSigner.generate())
    with pytest.raises(TrustError):
        verify_package(forged, trust=_trust(built))


def test_expired_and_future_packages(built):
    with pytest.raises(TrustError, match=r"manifest.json: the package expired"):
        verify_package(built["pkg"], trust=_trust(built), now=datetime.now(timezone.utc) + timedelta(days=366))
    with pytest.raises(TrustError, match="in the future"):
        verify_package(built["pkg"], trust=_trust(built), now=datetime.now(timezone.utc) - timedelta(days=1))


# ---------------------------------------------------------------------- zip shape
@pytest.mark.parametrize("kind,match", [
    ("zip-slip", "path outside the archive"), ("absolute", "path outside the archive"),
    ("extra", "unexpected entry"), ("missing", "evidence.json: missing entry"),
    ("duplicate", "dp_certificate.json: duplicate entry"), ("oversized", "over the limit"),
    ("compressed", "entry is compressed"), ("comment", "archive comment"), ("prefix", "not a TGSP package"),
    ("not-zip", "not a TGSP package"), ("directory", "no such package file"),
    ("gap", "unaccounted bytes before entry"), ("descriptor", "data descriptor"),
])
def test_zip_shape_attacks(built, tmp_path, kind, match):
    p = tmp_path / "bad.tgsp"
    if kind == "zip-slip":
        rewrite(built["pkg"], p, extra={"../../evil.py": b"x"})
    elif kind == "absolute":
        rewrite(built["pkg"], p, extra={"/tmp/evil.py": b"x"})
    elif kind == "extra":
        rewrite(built["pkg"], p, extra={"notes.txt": b"x"})
    elif kind == "missing":
        rewrite(built["pkg"], p, drop=F.EVIDENCE)
    elif kind == "duplicate":
        rewrite(built["pkg"], p, dup=F.CERTIFICATE)
    elif kind == "oversized":
        rewrite(built["pkg"], p, replace={F.CERTIFICATE: lambda d: d + b" " * F.MAX_SIZES[F.CERTIFICATE]})
    elif kind == "compressed":
        rewrite(built["pkg"], p, compress=F.EVIDENCE)
    elif kind == "comment":
        rewrite(built["pkg"], p)
        with zipfile.ZipFile(p, "a") as z:
            z.comment = b"hidden"
    elif kind == "prefix":
        p.write_bytes(b"#!/bin/sh\n" + built["pkg"].read_bytes())
    elif kind == "not-zip":
        p.write_bytes(b"not a zip")
    elif kind in ("gap", "descriptor"):
        with zipfile.ZipFile(built["pkg"]) as z:
            data = {n: z.read(n) for n in F.ENTRIES}
        with open(p, "wb") as f:
            target = _Unseekable(f) if kind == "descriptor" else f
            with zipfile.ZipFile(target, "w") as z:
                for n in F.ENTRIES:
                    z.writestr(n, data[n])
                    if kind == "gap" and n == F.MANIFEST:
                        f.write(b"hidden payload")
                        z.start_dir = f.tell()  # zipfile would otherwise write the next entry over it
    else:
        p.mkdir()
    with pytest.raises(PackageError, match=match):
        verify_package(p, trust=_trust(built))


class _Unseekable:
    """A write-only stream without seek: zipfile then writes data descriptors (flag bit 3)."""

    def __init__(self, f):
        self.f = f

    def write(self, b):
        return self.f.write(b)

    def flush(self):
        self.f.flush()

    def seekable(self):
        return False


# ---------------------------------------------------------------------- insider lies (validly re-signed)
@pytest.mark.parametrize("docs,manifest_edit,err", [
    ({}, lambda m: m.update(publisher="x"), PackageError),
    ({}, lambda m: m.update(base_model=[]), PackageError),
    ({}, lambda m: m.update(created="yesterday"), PackageError),
    ({}, lambda m: m.update(package_id="../../etc"), PackageError),
    ({F.EVIDENCE: lambda e: {**e, "dataset": "x"}}, None, IntegrityError),
    ({F.EVIDENCE: lambda e: {**e, "audit": None}}, None, IntegrityError),
    ({F.EVIDENCE: lambda e: [e]}, None, IntegrityError),
    ({F.CERTIFICATE: lambda c: {**c, "history": "x"}}, None, IntegrityError),
    ({F.CERTIFICATE: lambda c: {**c, "history": [[1.0, 0.1]]}}, None, IntegrityError),
    ({F.CERTIFICATE: lambda c: [c]}, None, IntegrityError),
    ({F.RECIPIENTS: lambda r: {**r, "recipients": [1]}}, None, PackageError),
    ({F.RECIPIENTS: lambda r: {**r, "recipients": r["recipients"] * 2}}, None, PackageError),
    ({}, lambda m: m.update(weights_encryption="AES-128-CTR"), PackageError),
    ({}, lambda m: m.update(recipient_suite="RSA-OAEP"), PackageError),
    ({}, lambda m: m.update(tokenizer_sha256="abc"), PackageError),
    ({}, lambda m: m["adapter"].update(format="pickle"), PackageError),
    ({}, lambda m: m["adapter"].update(size=-1), PackageError),
])
def test_malformed_but_signed_documents_fail_cleanly(built, tmp_path, docs, manifest_edit, err):
    bad = resign(built["pkg"], tmp_path / "bad.tgsp", built["publisher"], docs=docs, manifest_edit=manifest_edit)
    with pytest.raises(err):
        verify_package(bad, trust=_trust(built))


def test_now_must_be_timezone_aware(built):
    with pytest.raises(ConfigError, match="timezone-aware"):
        verify_package(built["pkg"], trust=_trust(built), now=datetime.now())
def test_understated_epsilon_is_caught_even_when_validly_signed(built, tmp_path):
    def lie(c):
        c["epsilon"] = c["epsilon"] / 10
        return c

    bad = resign(built["pkg"], tmp_path / "bad.tgsp", built["publisher"], docs={F.CERTIFICATE: lie})
    with pytest.raises(IntegrityError, match=r"dp_certificate.json: states ε=.* but its parameters give"):
        verify_package(bad, trust=_trust(built))


@pytest.mark.parametrize("edit,match", [
    (lambda c: {**c, "accounting_valid": True, "sampling": "caller-supplied"}, "claims accounting_valid"),
    (lambda c: {**c, "steps": c["steps"] + 1}, "add up"),
    (lambda c: {**c, "noise_multiplier": c["noise_multiplier"] * 2}, "disagrees with noise_multiplier"),
    (lambda c: {**c, "adjacency": "replace one example"}, "adjacency"),
    (lambda c: {**c, "accountant": "magic"}, "unknown accountant"),
    (lambda c: {**c, "dp": False}, "must say plainly"),
    (lambda c: {**c, "epsilon_rdp": 0.01}, "RDP"),
])
def test_inconsistent_certificates_are_refused(built, tmp_path, edit, match):
    bad = resign(built["pkg"], tmp_path / "bad.tgsp", built["publisher"], docs={F.CERTIFICATE: edit})
    with pytest.raises(IntegrityError, match=match):
        verify_package(bad, trust=_trust(built))


def _evidence_edit(kind):
    def edit(ev):
        if kind == "dataset-size":
            ev["dataset"]["size"] = 41
        elif kind == "dataset-digest":
            ev["dataset"]["sha256"] = "0" * 64
        elif kind == "config":
            ev["training_config"]["learning_rate"] = 1.0
        elif kind == "proof":
            ev["audit"]["entries"][0]["inclusion_proof"][0] = "0" * 64
        elif kind == "entry":
            ev["audit"]["entries"][1]["entry"]["summary"]["records"] = 1
        elif kind == "checkpoint-root":
            ev["audit"]["checkpoint"]["root_hash"] = "1" * 64
        elif kind == "steps":
            ev["steps"] = 3
        return ev
    return edit


@pytest.mark.parametrize("kind,match", [
    ("dataset-size", "disagree with the DP certificate"), ("dataset-digest", "other parameters"),
    ("config", "other parameters"), ("proof", "inclusion proof does not verify"),
    ("entry", "record hash does not match"), ("checkpoint-root", "signature does not verify"),
    ("steps", "disagree with the DP certificate"),
])
def test_lying_evidence_is_refused(built, tmp_path, kind, match):
    bad = resign(built["pkg"], tmp_path / "bad.tgsp", built["publisher"], docs={F.EVIDENCE: _evidence_edit(kind)})
    with pytest.raises(IntegrityError, match=f"evidence.json: .*{match}"):
        verify_package(bad, trust=_trust(built))


def test_manifest_digest_mismatch_is_named(built, tmp_path):
    def wrong(m):
        m["entries"][F.EVIDENCE]["sha256"] = "0" * 64

    bad = resign(built["pkg"], tmp_path / "bad.tgsp", built["publisher"], manifest_edit=wrong)
    with pytest.raises(IntegrityError, match=r"evidence.json: SHA-256 does not match the signed manifest"):
        verify_package(bad, trust=_trust(built))


def test_manifest_must_be_canonical_and_v1(built, tmp_path):
    bad = resign(built["pkg"], tmp_path / "bad.tgsp", built["publisher"], manifest_edit=lambda m: m.update(format="tgsp/v2"))
    with pytest.raises(PackageError, match="unsupported format"):
        verify_package(bad, trust=_trust(built))


# ---------------------------------------------------------------------- bad inputs to packaging
def test_packaging_refuses_bad_inputs_and_changes_nothing(built, tmp_path):
    svc, aid = built["svc"], built["artifact_id"]
    before = svc.ledger.size()
    rec = [built["alice"].public_key()]
    with pytest.raises(ConfigError, match="at least one recipient"):
        package_checkpoint(svc, aid, tmp_path / "a.tgsp", recipients=[])
    with pytest.raises(ConfigError, match="bad recipient"):
        package_checkpoint(svc, aid, tmp_path / "a.tgsp", recipients=[{"public_key": "AAAA"}])
    with pytest.raises(ConfigError, match="expires_in_days"):
        package_checkpoint(svc, aid, tmp_path / "a.tgsp", recipients=rec, expires_in_days=0)
    with pytest.raises(ConfigError, match="does not exist"):
        package_checkpoint(svc, aid, tmp_path / "no" / "a.tgsp", recipients=rec)
    with pytest.raises(ConfigError, match="signer must be"):
        package_checkpoint(svc, aid, tmp_path / "a.tgsp", recipients=rec, signer="me")
    from tinker_nb.storage import ArtifactNotFoundError

    with pytest.raises(ArtifactNotFoundError):
        package_checkpoint(svc, "nope", tmp_path / "a.tgsp", recipients=rec)
    assert svc.ledger.size() == before and list(tmp_path.iterdir()) == []


def test_inspect_reads_without_verifying(built):
    doc = inspect_package(built["pkg"])
    assert doc[F.MANIFEST]["package_id"] == built["manifest"]["package_id"]
    assert doc[F.CERTIFICATE]["dp"] is True and len(doc[F.RECIPIENTS]) == 2
    raw = b"".join(zipfile.ZipFile(built["pkg"]).read(n) for n in (F.EVIDENCE, F.CERTIFICATE, F.MANIFEST))
    for text in ("the cat sat on the mat", "patient reports mild headache"):  # never the training data
        assert text.encode() not in raw
