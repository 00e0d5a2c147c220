"""Request and response bodies of the REST API (pydantic; they make /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AttachBody",
    "CreateClientBody",
    "DatasetBody",
    "DrawsBody",
    "ErrorBody",
    "ForwardBackwardBody",
    "ForwardBody",
    "FutureView",
    "LoadStateBody",
    "OptimStepBody",
    "PackageBody",
    "SampleBody",
    "SaveStateBody",
]

Record = str | dict[str, Any]  # text, {"prompt","completion"}, {"messages": [...]}, or tokenised
_Strict = ConfigDict(extra="forbid")


class _Body(BaseModel):
    model_config = _Strict


class CreateClientBody(_Body):
    """``config`` is ``TrainingConfig.to_dict()``; the tenant is the API key's."""

    config: dict[str, Any] = Field(default_factory=dict)


class DatasetBody(_Body):
    """Private records: strings, or dicts of ``input_ids`` (and optional ``labels``, ``attention_mask``)."""

    records: list[Record] = Field(min_length=1)
    name: str = Field(default="dataset", min_length=1, max_length=200)


class AttachBody(_Body):
    """Attach an uploaded data set (``dataset_id``), or upload and attach ``records`` in one call.

    ``charge_also``: record collections contained in the attached records (e.g. your data inside a privacy
    audit run that adds canaries); every step is charged to each one's own budget as well.
    """

    dataset_id: str | None = Field(default=None, max_length=100)
    records: list[Record] | None = Field(default=None, min_length=1)
    charge_also: list[Annotated[list[Record], Field(min_length=1)]] | None = Field(default=None, min_length=1,
                                                                                  max_length=64)


class DrawsBody(_Body):
    """Start a Poisson draw iterator: ``steps`` draws, or the steps of ``epochs`` expected passes."""

    steps: int | None = Field(default=None, ge=1, le=10_000_000)
    epochs: float | None = Field(default=None, gt=0, le=1_000_000)


Batch = dict[str, list[list[int]]] | list[str] | list[dict[str, list[int]]]


class ForwardBackwardBody(_Body):
    """Train on a server-side draw (``draw_id``) or on a caller-supplied ``batch`` (accounted as such)."""

    draw_id: str | None = Field(default=None, max_length=100)
    batch: Batch | None = None


class OptimStepBody(_Body):
    learning_rate: float | None = Field(default=None, gt=0, le=10.0)


class SampleBody(_Body):
    prompts: str | list[str]
    max_tokens: int = Field(default=32, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0, le=100)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1, le=1_000_000)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    num_samples: int = Field(default=1, ge=1, le=64)


class ForwardBody(_Body):
    """A caller-supplied batch to score (no gradients; the pending step is untouched)."""

    batch: Batch


class SaveStateBody(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    include_optimizer: bool = True
    metadata: dict[str, Any] | None = None


class LoadStateBody(_Body):
    artifact_id: str = Field(min_length=1, max_length=100)


class PackageBody(_Body):
    """Recipients are public keys as written by ``RecipientPublicKey.to_dict()`` / ``.save()``."""

    recipients: list[dict[str, Any]] = Field(min_length=1, max_length=64)
    expires_in_days: float = Field(default=365.0, gt=0, le=36_500)


class FutureView(BaseModel):
    future_id: str
    op: str
    training_client_id: str
    created: float
    status: Literal["pending", "done", "failed"]
    result: Any = None
    error: dict[str, str] | None = None


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
