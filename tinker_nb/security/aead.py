"""Authenticated encryption: AES-256-GCM for small values, Cobblestone-256 for large streams.

Streams use the C2SP chunked-encryption construction shipped in ``cryptography`` >= 50
(``cryptography.cobblestone``): AES-256-GCM per chunk, key commitment, and detection of truncation,
reordering and extension. The ``context`` bytes are bound into the key derivation, so they act as
associated data for the whole stream. No primitive here is written by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import IntegrityError

__all__ = ["NONCE_LEN", "READ_CHUNK", "decrypt_stream", "encrypt_stream", "new_key", "open_sealed", "seal"]

NONCE_LEN = 12
READ_CHUNK = 1 << 20  # bytes fed to the stream cipher at a time: bounds memory on both sides


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """AES-256-GCM with a random 96-bit nonce: returns nonce ‖ ciphertext ‖ tag."""
    nonce = os.urandom(NONCE_LEN)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, *, aad: bytes, what: str = "value") -> bytes:
    """Inverse of :func:`seal`; raises IntegrityError if anything (data, nonce, tag or aad) changed."""
    if len(blob) < NONCE_LEN + 16:
        raise IntegrityError(f"{what} is truncated ({len(blob)} bytes).")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
    except InvalidTag:
        raise IntegrityError(f"{what} failed authentication (tampered, truncated, or bound to other data).") from None


def encrypt_stream(key: bytes, chunks: Iterable[bytes], out: BinaryIO, *, context: bytes) -> int:
    """Encrypt an iterable of byte chunks to ``out`` (Cobblestone-256); returns ciphertext bytes written."""
    from cryptography.cobblestone import Cobblestone256Encryptor

    enc = Cobblestone256Encryptor(key, context)
    n = 0
    for chunk in chunks:
        view = memoryview(chunk)  # slices without copying
        for i in range(0, len(view), READ_CHUNK):
            piece = enc.update(view[i:i + READ_CHUNK])
            out.write(piece)
            n += len(piece)
    tail = enc.finalize()
    out.write(tail)
    return n + len(tail)


class Readable(Protocol):
    """What ``decrypt_stream`` reads from: a binary file, or anything with ``read(n) -> bytes``."""

    def read(self, n: int = -1, /) -> bytes: ...


def decrypt_stream(key: bytes, inp: Readable, *, context: bytes, what: str = "artifact") -> bytes:
    """Decrypt a Cobblestone-256 stream from ``inp``; IntegrityError on any change, cut or extension.

    Reads ``READ_CHUNK`` bytes at a time. Plaintext is only returned after ``finalize`` has verified the
    final chunk, so a truncated stream never yields partial data.
    """
    from cryptography.cobblestone import Cobblestone256Decryptor

    dec = Cobblestone256Decryptor(key, context)
    parts = []
    try:
        while True:
            block = inp.read(READ_CHUNK)
            if not block:
                break
            parts.append(dec.update(block))
        parts.append(dec.finalize())
    except (InvalidTag, ValueError):
        raise IntegrityError(f"{what} failed authentication: its bytes were changed, cut or extended.") from None
    return b"".join(parts)
