"""Canaries for a one-run audit, and the sealed coins that decide which ones are trained on. Torch-free.

A canary is an ordinary, distinct training record whose loss counts only on its random *secret* tokens:

* ``random`` — a fixed short prefix (``<s>``) followed by ``length`` tokens drawn uniformly from the
  non-special vocabulary (high entropy, mutually distinct: they do not interfere with each other);
* ``template`` — a templated secret as in "The Secret Sharer": ``"my account number is {secret}"`` with the
  secret ``digits`` random digits, one digit per token (tokenizers merge digit strings unpredictably, so
  the randomness space R is defined over tokens, |R| = 10**digits).

Each canary is included independently with probability ``inclusion_prob``. The coins live in
:class:`SealedCoins`: nothing that scores canaries ever receives them; the audit reveals them once every
score is fixed. Canary content, order and position never depend on the coins.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, StateError

__all__ = ["DEFAULT_TEMPLATE", "IGNORE_INDEX", "Canary", "CanarySet", "SealedCoins"]

IGNORE_INDEX = -100
DEFAULT_TEMPLATE = "my account number is {secret}"
KINDS = ("random", "template")


def _rng(seed: int | None) -> tuple[np.random.Generator, bool]:
    """A generator keyed with 128 bits from the OS, or a fixed seed (reproducible, stated in the result)."""
    if seed is None:
        return np.random.Generator(np.random.PCG64(secrets.randbits(128))), False
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer or None, got {seed!r}.")
    return np.random.Generator(np.random.PCG64(seed)), True


@dataclass(frozen=True)
class Canary:
    """One canary: ``input_ids`` (with BOS) and the position where its secret tokens begin."""

    index: int
    input_ids: tuple[int, ...]
    secret_start: int

    @property
    def secret_ids(self) -> tuple[int, ...]:
        return self.input_ids[self.secret_start:]

    def record(self) -> dict[str, list[int]]:
        """The training record: the loss counts only on the secret tokens (SFT-style; leaks most)."""
        ids = list(self.input_ids)
        return {"input_ids": ids, "labels": [IGNORE_INDEX] * self.secret_start + ids[self.secret_start:]}

    def placeholder(self) -> dict[str, list[int]]:
        """Same tokens, no label: occupies a sampling slot, contributes an exactly zero gradient."""
        ids = list(self.input_ids)
        return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(ids)}


class CanarySet:
    """``m`` distinct canaries of one kind, made for one tokenizer."""

    def __init__(self, canaries: Sequence[Canary], *, kind: str, length: int, tokenizer_vocab: int,
                 template: str | None = None, prefix_ids: Sequence[int] = (), alphabet: Sequence[int] = (),
                 decode: Any = None, seeded: bool = False) -> None:
        if not canaries:
            raise ConfigError("an audit needs at least one canary (n_canaries >= 1); a few hundred is typical.")
        seen = {c.input_ids for c in canaries}
        if len(seen) != len(canaries):
            raise DataError("canaries must be distinct: one coin must control exactly one record "
                            "(a repeated canary measures group privacy, not ε).")
        self.canaries = list(canaries)
        self.kind = kind
        self.length = length
        self.vocab_size = tokenizer_vocab
        self.template = template
        self.prefix_ids = tuple(prefix_ids)
        self.alphabet = tuple(alphabet)
        self._decode = decode
        self.seeded = seeded

    # ------------------------------------------------------------------ construction
    @classmethod
    def random_tokens(cls, n: int, *, tokenizer: Any, length: int = 16, seed: int | None = None) -> CanarySet:
        """``n`` canaries of ``length`` uniformly random non-special tokens after ``<s>``."""
        n = _count(n)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"canary length must be a positive integer, got {length!r}.")
        vocab = len(tokenizer)
        special = set(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []))
        alphabet = np.array([i for i in range(vocab) if i not in special], dtype=np.int64)
        if alphabet.size < 2:
            raise ConfigError("the tokenizer has fewer than 2 ordinary tokens; random-token canaries need more.")
        if n > alphabet.size ** length / 2:
            raise ConfigError(f"{n} distinct canaries of {length} tokens would collide; make them longer.")
        bos = getattr(tokenizer, "bos_token_id", None)
        prefix = (int(bos),) if bos is not None else ()
        rng, seeded = _rng(seed)
        out: list[Canary] = []
        seen: set[tuple[int, ...]] = set()
        while len(out) < n:
            secret = tuple(int(x) for x in alphabet[rng.integers(0, alphabet.size, size=length)])
            ids = prefix + secret
            if ids in seen:
                continue
            seen.add(ids)
            out.append(Canary(len(out), ids, len(prefix)))
        return cls(out, kind="random", length=length, tokenizer_vocab=vocab, prefix_ids=prefix,
                   alphabet=alphabet.tolist(), decode=getattr(tokenizer, "decode", None), seeded=seeded)

    @classmethod
    def templated(cls, n: int, *, tokenizer: Any, template: str = DEFAULT_TEMPLATE, digits: int = 6,
                  seed: int | None = None) -> CanarySet:
        """``n`` templated secrets ``template.format(secret=<digits random digits>)``, one token per digit."""
        n = _count(n)
        if not isinstance(template, str) or template.count("{secret}") != 1 or not template.endswith("{secret}"):
            raise ConfigError("template must end with the single placeholder '{secret}', "
                              "e.g. 'my account number is {secret}'.")
        if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 30:
            raise ConfigError(f"digits must be an integer in 1..30, got {digits!r}.")
        if n > 10 ** digits / 2:
            raise ConfigError(f"{n} distinct secrets of {digits} digits would collide; use more digits.")
        prefix = tuple(int(i) for i in tokenizer(template.replace("{secret}", ""))["input_ids"])
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is not None and (not prefix or prefix[0] != bos):
            prefix = (int(bos),) + prefix
        digit_ids = [tokenizer.convert_tokens_to_ids(d) for d in "0123456789"]
        unk = getattr(tokenizer, "unk_token_id", None)
        if any(i is None or i == unk for i in digit_ids) or len(set(digit_ids)) != 10:
            raise ConfigError("this tokenizer has no single token per digit; use kind='random' canaries.")
        rng, seeded = _rng(seed)
        out: list[Canary] = []
        seen: set[tuple[int, ...]] = set()
        while len(out) < n:
            secret = tuple(int(digit_ids[d]) for d in rng.integers(0, 10, size=digits))
            ids = prefix + secret
            if ids in seen:
                continue
            seen.add(ids)
            out.append(Canary(len(out), ids, len(prefix)))
        return cls(out, kind="template", length=digits, tokenizer_vocab=len(tokenizer), template=template,
                   prefix_ids=prefix, alphabet=digit_ids, decode=getattr(tokenizer, "decode", None), seeded=seeded)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.canaries)

    def __repr__(self) -> str:
        return f"CanarySet(kind={self.kind!r}, m={len(self)}, secret_tokens={self.length})"

    @property
    def secret_space_bits(self) -> float:
        """log2 |R|: the most exposure a secret can have."""
        return self.length * math.log2(len(self.alphabet))

    def text(self, i: int) -> str:
        """The canary as text (synthetic, safe to show)."""
        c = self.canaries[i]
        if self._decode is None:
            return " ".join(map(str, c.input_ids))
        return self._decode(list(c.input_ids), skip_special_tokens=True)

    def records(self) -> list[dict[str, list[int]]]:
        return [c.record() for c in self.canaries]

    def digest(self) -> str:
        """SHA-256 over the canaries' token ids (recorded so the audit can be re-checked)."""
        h = hashlib.sha256()
        for c in self.canaries:
            h.update(",".join(map(str, c.input_ids)).encode() + b";" + str(c.secret_start).encode() + b"\n")
        return h.hexdigest()

    def reference_records(self, n: int, *, seed: int | None = None) -> list[dict[str, list[int]]]:
        """``n`` fresh secrets from the same space, none of them a canary: the exposure references."""
        n = _count(n, what="references")
        rng, _ = _rng(seed)
        taken = {c.input_ids for c in self.canaries}
        alphabet = np.asarray(self.alphabet, dtype=np.int64)
        out: list[dict[str, list[int]]] = []
        seen: set[tuple[int, ...]] = set()
        guard = 0
        while len(out) < n:
            guard += 1
            if guard > 100 * n + 1000:
                raise ConfigError(f"could not draw {n} distinct references outside the canaries; use fewer.")
            ids = self.prefix_ids + tuple(int(x) for x in alphabet[rng.integers(0, alphabet.size, size=self.length)])
            if ids in taken or ids in seen:
                continue
            seen.add(ids)
            out.append(Canary(-1, ids, len(self.prefix_ids)).record())
        return out

    def check_disjoint(self, records: Iterable[Any], *, tokenizer: Any = None) -> None:
        """Refuse canaries that also occur in the data (duplication turns ε into group privacy)."""
        ids_set = {c.input_ids for c in self.canaries}
        secrets_text = None
        for i, r in enumerate(records):
            if isinstance(r, dict) and "input_ids" in r:
                ids = tuple(int(x) for x in r["input_ids"])
                if ids in ids_set:
                    raise DataError(f"data record {i} is identical to a canary; canaries must be new, unique records.")
            elif self.kind == "template" and isinstance(r, (str, dict)):
                if secrets_text is None:
                    secrets_text = {self.text(j).split()[-1] for j in range(len(self))}
                text = r if isinstance(r, str) else json.dumps(r, ensure_ascii=False, default=str)
                if any(s in text for s in secrets_text if len(s) >= 4):
                    raise DataError(f"data record {i} contains a canary secret; draw new canaries (seed) or "
                                    "remove the record.")


class SealedCoins:
    """The inclusion coins, hidden from every scorer until :meth:`reveal`.

    With ``inclusion_prob`` = 1/2 every canary gets a fair coin (the setting of the one-run theorem).
    Otherwise a public, coin-independent draw first marks which canaries take part in the certified audit
    (each with probability 2·min(p, 1−p)); those get fair coins, the others are always excluded (p < 1/2) or
    always included (p > 1/2). Every canary is then included with probability exactly p, and the certified
    bound uses the fair-coin canaries only, where the theorem applies as stated.
    """

    def __init__(self, m: int, inclusion_prob: float = 0.5, *, seed: int | None = None) -> None:
        m = _count(m)
        p = inclusion_prob
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0.0 < p < 1.0:
            raise ConfigError(f"inclusion_prob must be strictly between 0 and 1 (0.5 is the usual choice), got {p!r}.")
        rng, self.seeded = _rng(seed)
        self.m = m
        self.inclusion_prob = float(p)
        if p == 0.5:
            audited = np.ones(m, dtype=bool)
        else:
            audited = rng.random(m) < 2.0 * min(p, 1.0 - p)
        fair = rng.random(m) < 0.5
        default = p > 0.5
        self.audited = audited  # public: independent of the coins
        self.audited.setflags(write=False)
        self.__included = np.where(audited, fair, default)
        self.__included.setflags(write=False)
        self._revealed = False
        self._commitment = hashlib.sha256(np.packbits(self.__included).tobytes()
                                          + secrets.token_bytes(16)).hexdigest()

    def __repr__(self) -> str:
        state = "revealed" if self._revealed else "sealed"
        return f"SealedCoins(m={self.m}, inclusion_prob={self.inclusion_prob:g}, {state})"

    def _for_training(self) -> np.ndarray:
        """The mask, for building the training data set only (the training run may see it; scorers may not)."""
        return self.__included

    @property
    def revealed(self) -> bool:
        return self._revealed

    def reveal(self, *, scores_fixed: bool) -> np.ndarray:
        """Open the coins. Call only once every score is computed (``scores_fixed=True`` says so)."""
        if scores_fixed is not True:
            raise StateError("reveal the coins only after every canary score is fixed (scores_fixed=True).")
        self._revealed = True
        return self.__included.copy()

    def included_after_reveal(self) -> np.ndarray:
        if not self._revealed:
            raise StateError("the coins are still sealed: score every canary first, then reveal.")
        return self.__included.copy()


def _count(n: Any, *, what: str = "canaries") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"the number of {what} must be a positive integer, got {n!r}.")
    if int(n) < 1:
        raise ConfigError(f"the number of {what} must be at least 1, got {n!r} (a few hundred canaries is typical).")
    return int(n)
