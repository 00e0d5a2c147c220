"""Composite signatures need both halves; interop with pqcrypto; HPKE recipients."""

from __future__ import annotations

import pytest

from tinker_nb.errors import KeyAccessError, SignatureError
from tinker_nb.security.kem import RecipientIdentity, load_identity, load_recipient, seal
from tinker_nb.security.signing import (
    LABEL,
    MLDSA_SIG,
    HybridSigner,
    load_public_key,
    load_signer,
    message_representative,
)

CTX = b"tgsp/v1"


@pytest.fixture(scope="module")
def signer():
    return HybridSigner.generate()


def test_round_trip_and_key_id(signer):
    sig = signer.sign(b"manifest", context=CTX)
    signer.public_key().verify(b"manifest", sig, context=CTX)
    assert len(signer.key_id) == 64


@pytest.mark.parametrize("mutate,match", [
    (lambda s: s[:MLDSA_SIG], "bytes"),                                   # stripped Ed25519 half
    (lambda s: s[MLDSA_SIG:], "bytes"),                                   # stripped ML-DSA half
    (lambda s: bytes([s[0] ^ 1]) + s[1:], "ML-DSA-65 half"),             # ML-DSA half altered
    (lambda s: s[:-1] + bytes([s[-1] ^ 1]), "Ed25519 half"),             # Ed25519 half altered
    (lambda s: s[MLDSA_SIG:] + s[:MLDSA_SIG], "ML-DSA-65 half"),         # halves swapped
])
def test_both_halves_required(signer, mutate, match):
    sig = signer.sign(b"m", context=CTX)
    with pytest.raises(SignatureError, match=match):
        signer.public_key().verify(b"m", mutate(sig), context=CTX)


def test_other_key_message_context_fail(signer):
    sig = signer.sign(b"m", context=CTX)
    with pytest.raises(SignatureError):
        HybridSigner.generate().public_key().verify(b"m", sig, context=CTX)
    with pytest.raises(SignatureError):
        signer.public_key().verify(b"m2", sig, context=CTX)
    with pytest.raises(SignatureError):
        signer.public_key().verify(b"m", sig, context=b"other")


def test_mixing_halves_of_two_signers_fails(signer):
    other = HybridSigner.generate()
    a, b = signer.sign(b"m", context=CTX), other.sign(b"m", context=CTX)
    with pytest.raises(SignatureError):
        signer.public_key().verify(b"m", a[:MLDSA_SIG] + b[MLDSA_SIG:], context=CTX)


def test_pqcrypto_verifies_our_mldsa_half_and_ed25519_independently(signer):
    from pqcrypto.sign import ml_dsa_65

    msg = b"package manifest"
    sig = signer.sign(msg, context=CTX)
    m_prime = message_representative(msg, CTX)
    pk = signer.public_key().raw
    ml_dsa_65.verify(pk[:1952], m_prime, sig[:MLDSA_SIG], context=LABEL)  # raises on failure
    with pytest.raises(Exception):  # noqa: B017 - pqcrypto raises its own error type on a bad signature
        ml_dsa_65.verify(pk[:1952], m_prime + b"x", sig[:MLDSA_SIG], context=LABEL)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(pk[1952:]).verify(sig[MLDSA_SIG:], m_prime)


def test_mlkem_interoperates_with_pqcrypto():
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
    from pqcrypto.kem import ml_kem_768

    ours = MLKEM768PrivateKey.generate()
    ct, ss = ml_kem_768.encaps(ours.public_key().public_bytes_raw())
    assert ours.decapsulate(ct) == ss
    pk, sk = ml_kem_768.keygen()
    ss2, ct2 = MLKEM768PublicKey.from_public_bytes(pk).encapsulate()
    assert ml_kem_768.decaps(sk, ct2) == ss2


def test_serialisation_and_passphrases(tmp_path, signer):
    signer.save(tmp_path / "pub.key", passphrase="pw")
    assert load_signer(tmp_path / "pub.key", passphrase="pw").key_id == signer.key_id
    with pytest.raises(KeyAccessError, match="wrong passphrase"):
        load_signer(tmp_path / "pub.key", passphrase="nope")
    signer.public_key().save(tmp_path / "p.json")
    assert load_public_key(tmp_path / "p.json") == signer.public_key()
    text = (tmp_path / "pub.key").read_text()
    assert signer._private_bytes().hex() not in text
    assert "sealed" in text


def test_hpke_seal_open_and_refusals(tmp_path):
    alice, bob = RecipientIdentity.generate(), RecipientIdentity.generate()
    sealed = seal(alice.public_key(), b"k" * 32, info=b"tgsp/v1", aad=b"pkg")
    assert alice.open(sealed, info=b"tgsp/v1", aad=b"pkg") == b"k" * 32
    for bad in (lambda: bob.open(sealed, info=b"tgsp/v1", aad=b"pkg"),
                lambda: alice.open(sealed, info=b"tgsp/v1", aad=b"other"),
                lambda: alice.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), info=b"tgsp/v1", aad=b"pkg")):
        with pytest.raises(KeyAccessError):
            bad()
    alice.save(tmp_path / "alice.id", passphrase="pw")
    alice.public_key().save(tmp_path / "alice.pub")
    assert load_identity(tmp_path / "alice.id", passphrase="pw").key_id == alice.key_id
    assert load_recipient(tmp_path / "alice.pub") == alice.public_key()
    with pytest.raises(KeyAccessError):
        load_identity(tmp_path / "alice.id", passphrase="bad")


def test_reprs_hold_no_secrets(signer):
    ident = RecipientIdentity.generate()
    for obj, secret in ((signer, signer._private_bytes()), (ident, ident._private_bytes())):
        r = repr(obj) + str(obj)
        assert secret.hex() not in r and secret.hex()[:16] not in r
