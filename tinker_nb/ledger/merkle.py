"""RFC 9162 (§2.1) Merkle tree hashing, inclusion and consistency proofs, and their verification.

leaf hash  = SHA-256(0x00 ‖ data);  node hash = SHA-256(0x01 ‖ left ‖ right);  MTH({}) = SHA-256("").
Proof generation works over a list of leaf hashes; verification needs only hashlib (usable by a
third party and by the torch-free package verifier).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf *hashes*, computed level by level (O(n), no recursion)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])  # promoting the odd node equals RFC 9162's split at the largest power of 2
        level = nxt
    return level[0]


class Frontier:
    """A streaming RFC 9162 tree: ``push`` leaf hashes in order, read ``root()`` of the size so far.

    Keeps only the roots of the perfect subtrees that make up the current size (one per set bit of
    ``size``, largest first), so a push costs amortised one node hash and a root O(log n). Folding the
    stack from the right equals MTH's split at the largest power of two below n.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    def push(self, leaf: bytes) -> None:
        h, n = leaf, self.size
        while n & 1:
            h = node_hash(self._stack.pop(), h)
            n >>= 1
        self._stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


def _split(n: int) -> int:
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1 for leaf ``index`` of the tree over ``leaves``."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is outside a tree of size {n}.")

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _split(hi - lo)
        if m < k:
            return path(m, lo, lo + k) + [root(leaves[lo + k:hi])]
        return path(m - k, lo + k, hi) + [root(leaves[lo:lo + k])]

    return path(index, 0, n)


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1: the tree of ``old_size`` leaves is a prefix of this one."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ValueError(f"consistency needs 0 < old size ({old_size}) <= new size ({n}).")

    def sub(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        size = hi - lo
        if m == size:
            return [] if complete else [root(leaves[lo:hi])]
        k = _split(size)
        if m <= k:
            return sub(m, lo, lo + k, complete) + [root(leaves[lo + k:hi])]
        return sub(m - k, lo + k, hi, False) + [root(leaves[lo:lo + k])]

    return sub(old_size, 0, n, True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: True iff ``proof`` shows ``leaf`` (a leaf hash) at ``index`` in the tree."""
    if not 0 <= index < size or len(leaf) != 32:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != 32 or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: True iff ``proof`` shows the size1-tree is a prefix of the size2-tree."""
    if size1 < 1 or size2 < size1 or any(len(p) != 32 for p in proof):
        return False
    if size1 == size2:
        return not proof and root1 == root2
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # exact power of two: root1 is the first node
        path = [root1] + path
    if not path:
        return False
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0
