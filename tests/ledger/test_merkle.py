"""RFC 9162 Merkle hashing and proofs against transparency-dev's public test vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tinker_nb.ledger import merkle

V = json.loads((Path(__file__).parent.parent / "vectors" / "rfc9162" / "vectors.json").read_text())
LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in V["leaves_hex"]]
b64 = base64.b64decode


@pytest.mark.parametrize("n", range(1, 9))
def test_reference_roots(n):
    assert merkle.root(LEAVES[:n]).hex() == V["roots_hex"][str(n)]


def test_streaming_frontier_equals_mth_at_every_size():
    import hashlib

    leaves = [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(70)]
    f = merkle.Frontier()
    assert f.root() == merkle.EMPTY_ROOT
    for n in range(1, 71):
        f.push(leaves[n - 1])
        assert f.size == n
        assert f.root() == merkle.root(leaves[:n])
    g = merkle.Frontier()
    for leaf in LEAVES:
        g.push(leaf)
    assert g.root().hex() == V["roots_hex"][str(len(LEAVES))]


def test_empty_root():
    assert merkle.root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("case", V["inclusion"], ids=lambda c: c["file"])
def test_inclusion_vectors(case):
    ok = merkle.verify_inclusion(b64(case["leafHash"]), case["leafIdx"], case["treeSize"],
                                 [b64(p) for p in case["proof"]], b64(case["root"]))
    assert ok is (not case["wantErr"])
    if not case["wantErr"]:
        assert merkle.inclusion_proof(case["leafIdx"], LEAVES[:case["treeSize"]]) == [b64(p) for p in case["proof"]]


@pytest.mark.parametrize("case", V["consistency"], ids=lambda c: c["file"])
def test_consistency_vectors(case):
    ok = merkle.verify_consistency(case["size1"], case["size2"], b64(case["root1"]), b64(case["root2"]),
                                   [b64(p) for p in case["proof"]])
    assert ok is (not case["wantErr"])
    if not case["wantErr"]:
        assert merkle.consistency_proof(case["size1"], LEAVES[:case["size2"]]) == [b64(p) for p in case["proof"]]


def test_all_proofs_round_trip_and_are_logarithmic():
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(70)]
    for n in range(1, 71):
        r = merkle.root(leaves[:n])
        for i in range(0, n, 7):
            p = merkle.inclusion_proof(i, leaves[:n])
            assert len(p) <= n.bit_length()
            assert merkle.verify_inclusion(leaves[i], i, n, p, r)
            assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, p, r) or n == 1
        for m in range(1, n + 1, 5):
            p = merkle.consistency_proof(m, leaves[:n])
            assert merkle.verify_consistency(m, n, merkle.root(leaves[:m]), r, p)
            assert not merkle.verify_consistency(m, n, merkle.root(leaves[:m]), merkle.root(leaves[:n - 1] + [leaves[0]]), p) or m == n
