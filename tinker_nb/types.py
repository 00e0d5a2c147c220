"""Result types of the public API (torch-free, shared by the in-kernel engine and the remote client).

Every result has attribute access all the way down, ``to_dict()``, a short readable ``repr`` (floats
to 4 significant digits) and an HTML table for notebooks. Loss, token counts and clipping statistics
are NOT differentially private: they are computed from the raw batch.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "AttrDict",
    "DPMetrics",
    "DatasetInfo",
    "ForwardBackwardResult",
    "ForwardResult",
    "LoadResult",
    "OptimStepResult",
    "PackageManifest",
    "SaveResult",
    "Status",
]


_TIME_KEYS = frozenset({"created", "time", "ts", "timestamp", "updated", "created_at"})


def _fmt(v: Any, key: Any = None) -> str:
    """Short and readable: floats to 4 significant digits, Unix times under a time key as UTC dates."""
    if key in _TIME_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool) and 1e8 < v < 1e11:
        from datetime import datetime, timezone

        return datetime.fromtimestamp(v, tz=timezone.utc).isoformat(timespec="seconds")
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    if isinstance(v, list):
        if len(v) > 6:
            return f"[{', '.join(_fmt(x) for x in v[:3])}, … {len(v)} items]"
        return f"[{', '.join(_fmt(x) for x in v)}]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x, k)}" for k, x in v.items()) + "}"
    return repr(v)


def _html_table(title: str, items: Iterable[tuple[Any, Any]]) -> str:
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(_fmt(v, k))}</td></tr>"
                   for k, v in items)
    return f"<table><caption>{html.escape(title)}</caption>{rows}</table>"


class _Readable:
    """Readable repr and HTML for dataclass results."""

    _hidden: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)  # type: ignore[arg-type]
                if f.name not in self._hidden]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={_fmt(v, k)}" for k, v in self._items()) + ")"

    def _repr_html_(self) -> str:
        return _html_table(type(self).__name__, self._items())


class AttrDict(dict):
    """A dict whose keys are attributes too, recursively (``res.encryption.algorithm``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            v = self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; fields: {sorted(self)}") from None
        return AttrDict(v) if isinstance(v, dict) and not isinstance(v, AttrDict) else v

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {k for k in self if isinstance(k, str)})

    def to_dict(self) -> dict[str, Any]:
        return dict(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={_fmt(v, k)}" for k, v in self.items()) + ")"

    def _repr_html_(self) -> str:
        return _html_table(type(self).__name__, self.items())


class DatasetInfo(AttrDict):
    """What ``attach_dataset`` returns: ``records``, ``sample_rate``, ``noise_multiplier``, ``max_steps`` (what the
    budget allows), ``dataset_sha256``, ``dataset_epsilon`` (spent on it before), ``pool``."""


class PackageManifest(AttrDict):
    """What ``package`` returns: the package's signed manifest (``package_id``, ``publisher``, ``expires``, ...)."""


class Status(AttrDict):
    """What ``%tinker status`` returns: the :class:`DPMetrics` fields, ``last_loss`` and ``checkpoints``."""


class SaveResult(AttrDict):
    """What ``save_state`` returns: ``artifact_id``, ``name``, ``step``, ``encryption`` (with ``algorithm``),
    ``content_sha256``; the seed's names ``encrypted`` and ``content_hash`` are there too."""


class LoadResult(AttrDict):
    """What ``load_state`` returns: ``artifact_id``, ``name``, ``step`` (of the checkpoint), ``restored``."""


@dataclass(repr=False)
class ForwardBackwardResult(_Readable):
    """One ``forward_backward``. Loss and clip statistics are NOT differentially private."""

    loss: float
    loss_sum: float
    examples: int
    tokens: int
    clipped: int
    clip_fraction: float
    grad_norm_mean: float
    grad_norm_max: float
    noise_only: bool
    accumulated_examples: int
    seconds: float
    source: str = "poisson"

    @property
    def tokens_processed(self) -> int:  # the seed SDK's name
        return self.tokens

    @property
    def grad_norm(self) -> float:  # the seed SDK's name: mean per-example norm before clipping
        return self.grad_norm_mean


@dataclass(repr=False)
class ForwardResult(_Readable):
    """``forward``: per-example summed loss and per-token log-probabilities (no gradients; not private)."""

    losses: list[float]
    logprobs: list[list[float]]
    tokens: list[list[int]]
    seconds: float

    @property
    def loss(self) -> float:
        n = sum(len(t) for t in self.tokens)
        return sum(self.losses) / n if n else float("nan")


@dataclass(repr=False)
class OptimStepResult(_Readable):
    step: int
    examples: int
    noise_std: float
    normaliser: float
    epsilon_live: float | None
    seconds: float


@dataclass(repr=False)
class DPMetrics(_Readable):
    """Privacy spent. ``epsilon_spent`` is the data set's total over every client in the workspace.

    ``epsilon_spent = min(accountant's ε, RDP ε)`` (both upper bounds; ``epsilon_accountant`` says which);
    ``client_epsilon`` is what this client's own steps alone would spend; ``steps`` are this client's,
    ``dataset_steps`` every client's on this data set.
    """

    dp_enabled: bool
    epsilon_spent: float
    epsilon_remaining: float | None
    target_epsilon: float | None
    delta: float | None
    steps: int
    noise_multiplier: float | None
    max_grad_norm: float | None
    sample_rate: float | None
    expected_batch_size: int
    dataset_size: int | None
    accountant: str | None
    epsilon_rdp: float | None
    sampling: str
    accounting_valid: bool
    max_steps: int | None
    notes: list[str] = field(default_factory=list)
    epsilon_accountant: str | None = None
    client_epsilon: float | None = None
    dataset_steps: int = 0
    dataset_sha256: str | None = None
    caller_supplied_mu2: float = 0.0
    noise_source: str = "none"
    pool: str | None = None  # the odometer pool charged: dataset:<order-free digest of the records>, or caller-supplied

    @property
    def total_epsilon(self) -> float:  # the seed SDK's name
        return self.epsilon_spent
