"""The committed TGSP v1 test vectors (tests/vectors/tgsp/) and the independent reference verifier.

The vectors pin the format: if these tests fail after a code change, the format changed; either
revert or bump the version, update docs/TGSP_SPEC.md and regenerate with make_vectors.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tinker_nb.security.kem import load_identity
from tinker_nb.security.signing import load_public_key, load_signer, message_representative
from tinker_nb.tgsp import format as F
from tinker_nb.tgsp import unseal_adapter, verify_package

from .helpers import BLOCK_HEAVY, flip, rewrite

VEC = Path(__file__).resolve().parents[1] / "vectors" / "tgsp"
PKG, PUB = VEC / "sample.tgsp", VEC / "publisher.pub"
EXPECTED = json.loads((VEC / "expected.json").read_text())
KEYS = json.loads((VEC / "keys.json").read_text())
REF = VEC / "reference_verify.py"


def _ref_module():
    spec = importlib.util.spec_from_file_location("tgsp_reference_verify", REF)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sample_package_verifies_with_the_current_code():
    rep = verify_package(PKG, trust=[PUB])
    assert rep.package_id == EXPECTED["package_id"] and rep.manifest_sha256 == EXPECTED["manifest_sha256"]
    assert rep.publisher_key_id == EXPECTED["publisher_key_id"] and rep.recipients == [EXPECTED["recipient_key_id"]]
    assert rep.certificate["epsilon"] == EXPECTED["epsilon"] and rep.certificate["delta"] == EXPECTED["delta"]
    assert rep.evidence["proven_operations"] == EXPECTED["proven_operations"]
    assert {k: rep.evidence["ledger_checkpoint"][k] for k in ("size", "root_hash", "key_id")} == \
        EXPECTED["ledger_checkpoint"]


def test_expected_digests_and_intermediate_values_follow_the_spec():
    with zipfile.ZipFile(PKG) as z:
        assert [i.filename for i in z.infolist()] == list(F.ENTRIES)
        e = {n: z.read(n) for n in F.ENTRIES}
    for n in F.ENTRIES:
        assert EXPECTED["entries"][n] == {"sha256": hashlib.sha256(e[n]).hexdigest(), "size": len(e[n])}
    manifest = json.loads(e[F.MANIFEST])
    assert {n: manifest["entries"][n] for n in F.HASHED} == {n: EXPECTED["entries"][n] for n in F.HASHED}
    assert message_representative(e[F.MANIFEST], b"tgsp/v1").hex() == EXPECTED["signature_m_prime_hex"]
    pid = manifest["package_id"].encode()
    assert bytes.fromhex(EXPECTED["hpke_info_hex"]) == b"tinker-nb/hpke/v1|\x00\x13tgsp/v1/package-key" + pid
    assert bytes.fromhex(EXPECTED["weights_context_hex"]) == b"tgsp/v1/weights|" + pid


def test_vector_keys_load_and_match_their_raw_form():
    signer = load_signer(VEC / "publisher.key", passphrase="tgsp-test-vector")
    ident = load_identity(VEC / "recipient.key", passphrase="tgsp-test-vector")
    assert signer.key_id == KEYS["publisher"]["key_id"] == load_public_key(PUB).key_id
    assert signer.public_key().raw.hex() == KEYS["publisher"]["public_key"]
    assert ident.key_id == KEYS["recipient"]["key_id"] and ident.public_key().raw.hex() == KEYS["recipient"]["public_key"]
    adapter, _, _ = unseal_adapter(PKG, identity=ident, trust=[PUB])
    assert hashlib.sha256(adapter).hexdigest() == EXPECTED["adapter_sha256"]


def test_vector_opens_on_the_embedded_model_and_samples_as_recorded():
    from tinker_nb.tgsp import open_package

    ident = load_identity(VEC / "recipient.key", passphrase="tgsp-test-vector")
    edge = open_package(PKG, identity=ident, trust=[PUB])
    g = EXPECTED["greedy_sample"]
    assert edge.sample([g["prompt"]], max_tokens=g["max_tokens"]).samples[0].tokens == g["tokens"]


def _run_reference(*args: str) -> subprocess.CompletedProcess:
    """The reference verifier in a process where tinker_nb, torch and friends cannot be imported."""
    code = BLOCK_HEAVY.format(blocked=("tinker_nb", "torch", "transformers", "peft", "opacus", "dp_accounting")) + \
        textwrap.dedent(f"""
        import runpy
        sys.argv = [{str(REF)!r}] + {list(args)!r}
        runpy.run_path({str(REF)!r}, run_name="__main__")
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=os.getcwd())


def test_reference_verifier_verifies_and_opens_the_vector_without_tinker_nb():
    out = _run_reference(str(PKG), str(PUB), "--recipient-key", KEYS["recipient"]["private_key"])
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["ok"] and res["mldsa_implementation"] == "pqcrypto"  # independent ML-DSA-65
    assert res["package_key"] == EXPECTED["package_key_hex"] and res["adapter_sha256"] == EXPECTED["adapter_sha256"]


def test_reference_verifier_accepts_fresh_packages_and_rejects_tampering(built, tmp_path):
    out = _run_reference(str(built["pkg"]), str(built["pub_file"]))
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert set(json.loads(out.stdout)["proven_operations"]) == {"create_training_client", "attach_dataset",
                                                                "optim_step"}
    bad = rewrite(built["pkg"], tmp_path / "bad.tgsp", replace={F.MANIFEST: flip})
    out = _run_reference(str(bad), str(built["pub_file"]))
    assert out.returncode == 1 and "ML-DSA-65 half does not verify" in out.stdout


def test_independent_ed25519_follows_rfc8032():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ref = _ref_module()
    # RFC 8032 §7.1 TEST 1 (empty message)
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b4"
                        "6bd25bf5f0595bbe24655141438e7a100b")
    assert ref.ed25519_verify(pk, b"", sig)
    assert not ref.ed25519_verify(pk, b"x", sig) and not ref.ed25519_verify(pk, b"", flip(sig, at=40))
    k = Ed25519PrivateKey.generate()
    raw = k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    msg = b"tgsp interop"
    assert ref.ed25519_verify(raw, msg, k.sign(msg)) and not ref.ed25519_verify(raw, msg + b"!", k.sign(msg))


@pytest.mark.parametrize("half", ["mldsa", "ed25519"])
def test_reference_composite_needs_both_halves(half):
    ref = _ref_module()
    with zipfile.ZipFile(PKG) as z:
        manifest, sig = z.read(F.MANIFEST), json.loads(z.read(F.SIGNATURE))
    import base64

    raw = base64.b64decode(sig["signature"])
    pub = bytes.fromhex(KEYS["publisher"]["public_key"])
    assert ref.composite_verify(pub, manifest, raw, b"tgsp/v1") == "pqcrypto"
    bad = flip(raw, at=100 if half == "mldsa" else 3320)
    with pytest.raises(ref.Fail, match="ML-DSA-65" if half == "mldsa" else "Ed25519"):
        ref.composite_verify(pub, manifest, bad, b"tgsp/v1")


# ---------------------------------------------------------------------- strict zip framing (spec §2)
BAD = VEC / "bad"
BAD_INDEX = json.loads((BAD / "index.json").read_text())


def _make_vectors_module():
    spec = importlib.util.spec_from_file_location("tgsp_make_vectors", VEC / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_sample_is_framed_exactly_as_spec_section_2_says():
    mv = _make_vectors_module()
    with zipfile.ZipFile(PKG) as z:
        entries = {n: z.read(n) for n in F.ENTRIES}
    assert mv.zip_bytes(entries) == PKG.read_bytes()
    assert sorted(BAD_INDEX) == sorted(mv.BAD) == sorted(p.name for p in BAD.glob("*.tgsp"))
    for name, (kw, _) in mv.BAD.items():  # the committed bad vectors are what make_vectors.py writes
        assert (BAD / name).read_bytes() == mv.zip_bytes(entries, **kw), name


@pytest.mark.parametrize("name", sorted(BAD_INDEX))
def test_unsigned_bytes_in_the_zip_framing_are_refused_by_both_verifiers(name):
    """Every signed byte is unchanged; only the framing carries extra or contradictory bytes."""
    from tinker_nb.errors import PackageError

    with pytest.raises(PackageError):
        verify_package(BAD / name, trust=[PUB])
    ref = _ref_module()
    with pytest.raises(ref.Fail):
        ref.read_container(str(BAD / name))
    out = subprocess.run([sys.executable, str(REF), str(BAD / name), str(PUB)], capture_output=True, text=True)
    assert out.returncode == 1 and json.loads(out.stdout)["ok"] is False


def test_the_writer_refuses_packages_that_would_need_zip64(tmp_path):
    from tinker_nb.errors import PackageError
    from tinker_nb.tgsp.container import write_container

    entries = {n: b"{}" for n in F.ENTRIES}
    entries[F.WEIGHTS] = b"\0" * 16

    class Big(bytes):
        def __len__(self):
            return F.MAX_SIZES[F.WEIGHTS] + 1

    entries[F.WEIGHTS] = Big(b"\0")
    with pytest.raises(PackageError, match="over the TGSP v1 limit"):
        write_container(tmp_path / "x.tgsp", entries)
    assert not list(tmp_path.iterdir())


def test_the_writer_emits_exactly_the_spec_framing(tmp_path):
    from tinker_nb.tgsp.container import Container, write_container

    entries = {n: (n * 7).encode() for n in F.ENTRIES}
    p = write_container(tmp_path / "x.tgsp", entries)
    assert p.read_bytes() == _make_vectors_module().zip_bytes(entries)
    with Container(p) as c:  # and the strict reader accepts it
        assert c.small[F.MANIFEST] == entries[F.MANIFEST]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.tgsp"]  # no temp file left


def test_reference_verifier_opens_with_an_x_wing_seed(tmp_path):
    """A package for a recipient whose private key is a 32-byte X-Wing seed opens in the reference verifier."""
    from tinker_nb.security.kem import RecipientIdentity
    from tinker_nb.security.signing import HybridSigner
    from tinker_nb.tgsp.package import build_package

    with zipfile.ZipFile(PKG) as z:
        e = {n: z.read(n) for n in F.ENTRIES}
    ident = RecipientIdentity.generate()
    signer = HybridSigner.from_private_bytes(bytes.fromhex(KEYS["publisher"]["private_key"]))
    adapter, _, _ = unseal_adapter(PKG, identity=load_identity(VEC / "recipient.key", passphrase="tgsp-test-vector"),
                                   trust=[PUB])
    m = json.loads(e[F.MANIFEST])
    out = tmp_path / "seed.tgsp"
    build_package(out, adapter=adapter, base_model=m["base_model"], lora_config=m["lora_config"],
                  tokenizer_sha256=m["tokenizer_sha256"], evidence=json.loads(e[F.EVIDENCE]),
                  certificate=json.loads(e[F.CERTIFICATE]), signer=signer, recipients=[ident.public_key()])
    assert len(ident._private_bytes()) == 32
    res = subprocess.run([sys.executable, str(REF), str(out), str(PUB), "--recipient-key", ident._private_bytes().hex()],
                         capture_output=True, text=True, timeout=300)
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["adapter_sha256"] == hashlib.sha256(adapter).hexdigest(), res.stdout[-2000:]
