"""The attached private data set: its records, their digest, the Poisson sampler and the registry of draws.

``poisson_batches()`` hands out :class:`Draw` handles. A handle is opaque (it carries no records, so
the caller cannot alter what is trained on) and lazy: the records of draw k are sampled only when the
engine trains on it, so a draw that was queued but never ran (an interrupt, a ``break``) was never
sampled and releases nothing. Each handle is used exactly once, in the order handed out, by the client
that made it; the accountant charges the data set's budget before the records are sampled.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, DataError
from .noise import SecureBernoulli

__all__ = ["DataSource", "Draw", "dataset_digest"]


def dataset_digest(examples: Sequence[dict]) -> str:
    """SHA-256 over the tokenised records (their ``input_ids`` and ``labels``), in order."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex["input_ids"], separators=(",", ":")).encode())
        if "labels" in ex and ex["labels"] != ex["input_ids"]:
            h.update(b"|")
            h.update(json.dumps(ex["labels"], separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def records_digest(examples: Sequence[dict]) -> str:
    """SHA-256 of the multiset of tokenised records: the same records in any order give the same digest.

    This names the data set's privacy pool (Poisson sampling does not depend on the order, so neither may
    the budget); :func:`dataset_digest` (ordered) stays the data set's id in checkpoints and evidence.
    """
    per = sorted(dataset_digest([ex]) for ex in examples)
    return hashlib.sha256("\n".join(per).encode()).hexdigest()


class Draw:
    """An opaque handle for one Poisson draw; pass it to ``forward_backward`` exactly once.

    It holds no records: the engine samples them when it trains on the draw. ``index`` is the draw's
    position (1-based) in the loop that handed it out.
    """

    __slots__ = ("_generation", "_source", "draw_id", "index")

    def __init__(self, *, source: str, generation: int, index: int) -> None:
        self.draw_id = f"draw-{uuid.uuid4().hex[:16]}"
        self.index = index
        self._source = source
        self._generation = generation

    def __repr__(self) -> str:
        return f"Draw(#{self.index})"

    def __getitem__(self, key: Any) -> Any:
        raise DataError("a Poisson draw is opaque: its records are sampled by the engine when you pass it to "
                        "forward_backward(draw); it cannot be read or altered.")

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__getitem__(key)

    def __bool__(self) -> bool:  # a handle is always a handle (truth never asks for its size)
        return True

    def __len__(self) -> int:
        raise DataError("a Poisson draw's size is secret until the engine trains on it (its records are sampled "
                        "then); forward_backward(draw).result().examples tells it afterwards.")

    def belongs_to(self, source_id: str) -> bool:
        return self._source == source_id


class DataSource:
    """Records (tokenised), their digest, the secret Poisson coins and which draws were used."""

    def __init__(self, examples: list[dict], *, sample_rate: float, coins: SecureBernoulli) -> None:
        if not examples:
            raise ConfigError("the data set is empty; attach at least one record.")
        if not 0 < sample_rate <= 1:
            raise ConfigError(f"sample rate {sample_rate!r} must be in (0, 1]; batch_size must be <= data set size.")
        self.source_id = uuid.uuid4().hex
        self._examples = examples
        self.digest = dataset_digest(examples)
        self.pool_digest = records_digest(examples)  # order-free: names the privacy pool
        self.sample_rate = float(sample_rate)
        self._coins = coins
        self._generation = 0
        self._issued = 0  # handles handed out in the current generation
        self._next = 1  # index of the next handle to use in the current generation
        self.draws_taken = 0  # draws sampled over the source's life

    def __repr__(self) -> str:  # never show records
        return f"DataSource(records={len(self)}, q={self.sample_rate:.4g}, draws={self.draws_taken})"

    def __bool__(self) -> bool:  # a handle is always a handle (truth never asks for its size)
        return True

    def __len__(self) -> int:
        return len(self._examples)

    @property
    def fixed_seed(self) -> bool:
        return self._coins.fixed

    # -- handles ------------------------------------------------------------------------------
    def new_loop(self) -> None:
        """A new ``poisson_batches()`` loop: handles of earlier loops that were never used become invalid."""
        self._generation += 1
        self._issued = 0
        self._next = 1

    def issue(self) -> Draw:
        self._issued += 1
        return Draw(source=self.source_id, generation=self._generation, index=self._issued)

    def check(self, draw: Draw) -> None:
        """Refuse a handle that is another client's, stale, already used or out of order (changes nothing)."""
        if not isinstance(draw, Draw) or not draw.belongs_to(self.source_id):
            raise DataError("this draw was made by another training client (or another attach_dataset); pass "
                            "draws of this client's own poisson_batches().")
        if draw._generation != self._generation:
            raise DataError(f"draw #{draw.index} belongs to an earlier poisson_batches() loop whose unused draws were "
                            "dropped when a new loop started; use the draws of the current loop.")
        if draw.index < self._next:
            raise DataError(f"draw #{draw.index} was already used: each Poisson draw trains exactly once "
                            "(reusing it would double its records' contribution).")
        if draw.index > self._next:
            raise DataError(f"draw #{draw.index} is out of order: use draw #{self._next} first (draws train in the "
                            "order poisson_batches() hands them out).")

    def take(self, draw: Draw) -> list[int]:
        """Consume ``draw`` and sample its records: each joins independently with rate q (may be empty)."""
        self.check(draw)
        self._next += 1
        self.draws_taken += 1
        mask = self._coins.mask(len(self._examples), self.sample_rate)
        return [int(i) for i in mask.nonzero()[0]]

    def examples(self, indices: Sequence[int]) -> list[dict]:
        return [self._examples[i] for i in indices]

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records about the data (never the records, never the coins' key)."""
        return {"dataset_sha256": self.digest, "dataset_size": len(self), "sample_rate": self.sample_rate,
                "draws_taken": self.draws_taken}
