"""Secret randomness for DP-SGD: Gaussian noise and Poisson inclusion decisions from AES-256-CTR.

Why not ``torch.normal`` with a ``torch.Generator``: torch's CPU generator is a Mersenne Twister seeded
with 64 bits of which it keeps 32 (``manual_seed(s)`` and ``manual_seed(s + 2**32)`` give the same
stream), and its outputs are predictable from its state. Whoever can guess the seed regenerates the
noise and subtracts it. Here every stream is the keystream of AES-256 in counter mode (``cryptography``,
OpenSSL) under a fresh 256-bit key from the OS (:func:`os.urandom`); the key lives only in this
process's memory and is never written to a checkpoint, the ledger or a log.

* Gaussians: Box–Muller; per pair of outputs a 64-bit keystream word gives the radius (53-bit uniform,
  logarithm in float64) and a 32-bit word gives the angle; outputs are float32. :class:`GaussianNoise`.
* Poisson sampling: record ``i`` joins a step iff its 64-bit keystream word is below
  ``floor(q · 2**64)``, an inclusion probability equal to ``q`` within ``2**-64`` (no float32 rounding).
  :class:`SecureBernoulli`.

A fixed ``seed`` (tests, reproductions) derives the key with SHA-256 from the seed and a label; the
run is then marked invalid by the accountant (anyone who knows the seed can remove the noise).
"""

from __future__ import annotations

import hashlib
import math
import os
from fractions import Fraction

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["GaussianNoise", "KeyStream", "SecureBernoulli", "derive_key"]

_TWO_PI = 2.0 * math.pi
_LN_2_53 = 53.0 * math.log(2.0)


def derive_key(seed: int, label: str) -> bytes:
    """A 256-bit stream key from a caller-fixed seed (any size) and a purpose label (tests only)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    raw = seed.to_bytes(max(1, (seed.bit_length() + 7) // 8), "big")
    return hashlib.sha256(b"tinker-nb/stream-key/v1\x00" + label.encode() + b"\x00" + raw).digest()


class KeyStream:
    """An AES-256-CTR keystream: an endless, unpredictable sequence of bytes for one key."""

    def __init__(self, key: bytes | None = None) -> None:
        key = os.urandom(32) if key is None else key
        if len(key) != 32:
            raise ValueError("KeyStream needs a 32-byte key")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
        self._zeros = bytearray(0)
        self.bytes_used = 0

    def __repr__(self) -> str:  # never show key material
        return f"KeyStream(bytes_used={self.bytes_used})"

    def words(self, n: int) -> np.ndarray:
        """``n`` uniformly random uint64 words."""
        nbytes = 8 * n
        if len(self._zeros) < nbytes:
            self._zeros = bytearray(nbytes)
        out = bytearray(nbytes + 15)  # update_into wants room for a block
        written = self._enc.update_into(memoryview(self._zeros)[:nbytes], out)
        assert written == nbytes
        self.bytes_used += nbytes
        return np.frombuffer(out, dtype=np.uint64, count=n)


class GaussianNoise:
    """N(0, std²) noise from a :class:`KeyStream`; ``fixed`` says a caller chose the key (tests)."""

    def __init__(self, stream: KeyStream, *, fixed: bool) -> None:
        self._stream = stream
        self.fixed = fixed

    @classmethod
    def secure(cls) -> GaussianNoise:
        """Keyed with 256 bits from the OS (the default for every DP run)."""
        return cls(KeyStream(), fixed=False)

    @classmethod
    def seeded(cls, seed: int) -> GaussianNoise:
        """Reproducible noise for tests; a run using it is not a valid DP guarantee."""
        return cls(KeyStream(derive_key(seed, "noise")), fixed=True)

    def __repr__(self) -> str:
        return f"GaussianNoise({'fixed seed' if self.fixed else 'secure'})"

    def standard_normal(self, n: int) -> np.ndarray:
        """``n`` independent N(0, 1) draws as float32 (Box–Muller, radius computed in float64).

        Per pair of outputs: one 64-bit word k gives the radius ``sqrt(-2 ln((k' + 1) 2^-53))`` with k' its
        top 53 bits (uniform in (0, 1], so |z| reaches 8.6 before rounding), one 32-bit word gives the
        angle ``2π a / 2^32``.
        """
        pairs = (n + 1) // 2
        w = self._stream.words(pairs)
        a = self._stream.words((pairs + 1) // 2).view(np.uint32)[:pairs]
        r2 = np.log1p((w >> np.uint64(11)).astype(np.float64))  # ln(k' + 1)
        r2 -= _LN_2_53
        r2 *= -2.0
        r = np.sqrt(r2).astype(np.float32)
        theta = a.astype(np.float32)
        theta *= np.float32(_TWO_PI / 2.0**32)
        out = np.empty(2 * pairs, dtype=np.float32)
        np.cos(theta, out=out[:pairs])
        out[:pairs] *= r
        np.sin(theta, out=out[pairs:])
        out[pairs:] *= r
        return out[:n]

    def normal(self, shape: torch.Size | tuple[int, ...], std: float, *, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, prefetch: bool = False) -> torch.Tensor:
        """A tensor of independent N(0, std²) draws on ``device``.

        ``prefetch=True`` (used when training on an accelerator) draws the next call's standard normals of
        the same size in a background thread, so the CPU work overlaps the next step on the GPU. The values
        are the same kind of draws from the same secret keystream; only when they are computed changes.
        """
        n = math.prod(shape)
        if n == 0:
            return torch.zeros(shape, device=device, dtype=dtype)
        ready = self._take_prefetched(n)
        z = torch.from_numpy(ready if ready is not None else self.standard_normal(n)).to(device)
        if prefetch:
            self._prefetch(n)
        return z.mul_(float(std)).to(dtype).reshape(shape)

    _next: tuple[int, object] | None = None
    _executor: object = None

    def _prefetch(self, n: int) -> None:
        import concurrent.futures as cf

        if self._executor is None:
            self._executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinker-nb-noise")
        self._next = (n, self._executor.submit(self.standard_normal, n))  # type: ignore[attr-defined]

    def _take_prefetched(self, n: int) -> np.ndarray | None:
        nxt, self._next = self._next, None
        if nxt is None:
            return None
        size, fut = nxt
        z = fut.result()  # type: ignore[attr-defined]
        return z if size == n else None


class SecureBernoulli:
    """Independent Bernoulli(q) decisions from a :class:`KeyStream` (the Poisson sampler's coins)."""

    def __init__(self, stream: KeyStream, *, fixed: bool) -> None:
        self._stream = stream
        self.fixed = fixed

    @classmethod
    def secure(cls) -> SecureBernoulli:
        return cls(KeyStream(), fixed=False)

    @classmethod
    def seeded(cls, seed: int) -> SecureBernoulli:
        return cls(KeyStream(derive_key(seed, "sampler")), fixed=True)

    def __repr__(self) -> str:
        return f"SecureBernoulli({'fixed seed' if self.fixed else 'secure'})"

    @staticmethod
    def threshold(q: float) -> int:
        """``floor(q · 2**64)`` computed exactly from the float ``q``."""
        if not 0 < q <= 1:
            raise ValueError(f"sample rate must be in (0, 1], got {q!r}")
        return int(Fraction(q) * (1 << 64))

    def mask(self, n: int, q: float) -> np.ndarray:
        """Boolean mask of length ``n``: entry i is True with probability q (exactly, to 2**-64)."""
        t = self.threshold(q)
        words = self._stream.words(n)
        if t >= 1 << 64:
            return np.ones(n, dtype=bool)
        return words < np.uint64(t)
