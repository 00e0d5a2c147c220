"""Tinker wire formats, with the types and the protobuf schema imported from the pinned SDK (never copied).

* JSON requests are validated with the SDK's own request models after dropping keys those models do not
  know, so a newer SDK that adds optional fields still talks to this server (additive drift).
* ``forward_backward`` arrives as ``tinker_public_pb2.ForwardBackwardRequest`` (zstd is never switched on:
  ``/client/config`` answers ``proto_compress_fwdbwd=false``; a zstd body is still read through a bounded
  stream). Results of forward_backward and sampling go back as protobuf.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tinker import types as T
from tinker.proto import tinker_public_pb2 as pb

from ...errors import DataError

if TYPE_CHECKING:
    import pydantic

__all__ = [
    "MAX_DECOMPRESSED",
    "T",
    "TDatum",
    "decode_forward_backward",
    "decompress_bounded",
    "encode_forward_backward_output",
    "encode_sample_response",
    "model_input_tokens",
    "parse_json",
    "pb",
]

MAX_DECOMPRESSED = 256 * 1024 * 1024  # bytes a zstd fwd/bwd body may expand to


def parse_json(model: type[pydantic.BaseModel], body: Any) -> Any:
    """``model`` (an SDK request type) from a JSON object, ignoring keys it does not know."""
    if not isinstance(body, dict):
        raise DataError(f"the request body must be a JSON object for {model.__name__}.")
    import pydantic

    fields = set()
    for name, info in model.model_fields.items():
        fields.add(name)
        alias = info.validation_alias
        for choice in getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else []):
            if isinstance(choice, str):
                fields.add(choice)
        if isinstance(info.alias, str):
            fields.add(info.alias)
    try:
        return model.model_validate({k: v for k, v in body.items() if k in fields})
    except pydantic.ValidationError as exc:
        errs = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())) or 'body'}: {e.get('msg')}"
                         for e in exc.errors()[:5])
        raise DataError(f"invalid {model.__name__}: {errs}") from None


def decompress_bounded(data: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    """zstd through a stream read capped at ``limit`` (a frame's declared size is not trusted)."""
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    out = reader.read(limit + 1)
    while len(out) <= limit:
        more = reader.read(limit + 1 - len(out))
        if not more:
            break
        out += more
    if len(out) > limit:
        raise DataError(f"the compressed forward_backward body expands beyond {limit} bytes.")
    return out


@dataclass
class TDatum:
    """One Tinker datum as tokens: ``tokens`` (model input), ``targets`` and ``weights`` (same length)."""

    tokens: list[int]
    targets: list[int]
    weights: list[float]


_NP = {pb.DTYPE_FLOAT32: np.float32, pb.DTYPE_INT64: np.int64, pb.DTYPE_INT32: np.int32}
MAX_ELEMENTS = 1 << 24


def _tensor(msg: Any) -> np.ndarray:
    """A 1-D array from a proto ``Tensor`` (dense, or sparse CSR densified), checked against its shape."""
    dt = _NP.get(msg.dtype)
    if dt is None:
        raise DataError("loss_fn_inputs tensors must be float32, int32 or int64.")
    shape = [int(x) for x in msg.shape]
    n = int(np.prod(shape)) if shape else None
    if n is not None and (n < 0 or n > MAX_ELEMENTS):
        raise DataError(f"a loss_fn_inputs tensor of shape {shape} is too large.")
    try:
        if msg.HasField("sparse_csr"):
            if not shape or len(shape) > 2:
                raise DataError("a sparse loss_fn_inputs tensor needs a 1-D or 2-D shape.")
            rows, cols = (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])
            vals = np.frombuffer(msg.sparse_csr.values, dtype=dt)
            crow = np.frombuffer(msg.sparse_csr.crow_indices, dtype=np.int64)
            col = np.frombuffer(msg.sparse_csr.col_indices, dtype=np.int64)
            if len(crow) != rows + 1 or len(col) != len(vals) or (len(col) and (col.min() < 0 or col.max() >= cols)):
                raise DataError("a sparse loss_fn_inputs tensor has inconsistent CSR indices.")
            out = np.zeros(rows * cols, dtype=dt)
            for r in range(rows):
                a, b = int(crow[r]), int(crow[r + 1])
                if not 0 <= a <= b <= len(vals):
                    raise DataError("a sparse loss_fn_inputs tensor has inconsistent CSR indices.")
                out[r * cols + col[a:b]] = vals[a:b]
            return out
        arr = np.frombuffer(msg.dense, dtype=dt)
    except ValueError:
        raise DataError("a loss_fn_inputs tensor's bytes do not match its dtype.") from None
    if n is not None and arr.size != n:
        raise DataError(f"a loss_fn_inputs tensor has {arr.size} values for shape {shape}.")
    return arr


def _chunks_to_tokens(chunks: Any, where: str) -> list[int]:
    out: list[int] = []
    for c in chunks:
        kind = c.WhichOneof("chunk")
        if kind != "encoded_text":
            raise DataError(f"{where}: {kind or 'unknown'} inputs are not supported by tinker-nb (text tokens only).")
        out.extend(int(x) for x in np.frombuffer(c.encoded_text.tokens, dtype=np.int32))
    return out


def model_input_tokens(mi: Any) -> list[int]:
    """Token ids of an SDK ``ModelInput`` (text chunks only)."""
    out: list[int] = []
    for c in mi.chunks:
        if not isinstance(c, T.EncodedTextChunk):
            raise DataError(f"{type(c).__name__} inputs are not supported by tinker-nb (text tokens only).")
        out.extend(int(x) for x in c.tokens)
    return out


def decode_forward_backward(body: bytes, content_encoding: str | None) -> tuple[Any, list[TDatum]]:
    """(proto request, datums) of a ForwardBackwardRequest body; DataError on anything unsupported."""
    if content_encoding and content_encoding.lower() == "zstd":
        body = decompress_bounded(body)
    elif content_encoding and content_encoding.lower() not in ("identity", ""):
        raise DataError(f"Content-Encoding {content_encoding!r} is not supported (zstd or none).")
    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError
        raise DataError("the forward_backward body is not a ForwardBackwardRequest protobuf.") from None
    return msg, [_datum(i, d) for i, d in enumerate(msg.data)]


def _datum(i: int, d: Any) -> TDatum:
    where = f"datum {i}"
    tokens = _chunks_to_tokens(d.model_input, where)
    if not tokens:
        raise DataError(f"{where} has no input tokens.")
    unknown = set(d.loss_fn_inputs.keys()) - {"target_tokens", "weights"}
    if unknown:
        raise DataError(f"{where}: loss_fn_inputs {sorted(unknown)} are not supported; cross_entropy takes "
                        "target_tokens and weights.")
    if "target_tokens" not in d.loss_fn_inputs:
        raise DataError(f"{where} has no loss_fn_inputs['target_tokens'].")
    tgt = _tensor(d.loss_fn_inputs["target_tokens"])
    if tgt.dtype.kind not in "iu":
        raise DataError(f"{where}: target_tokens must be int64.")
    w = _tensor(d.loss_fn_inputs["weights"]) if "weights" in d.loss_fn_inputs else np.ones(len(tgt), np.float32)
    if len(tgt) != len(tokens) or len(w) != len(tokens):
        raise DataError(f"{where}: target_tokens ({len(tgt)}) and weights ({len(w)}) must have the input's length "
                        f"({len(tokens)}): one target per input position.")
    if not np.all(np.isfinite(w)) or not np.all((w == 0) | (w == 1)):
        raise DataError(f"{where}: weights must be 0 or 1 (the per-example DP loss sums the unmasked token losses; "
                        "fractional weights are not supported).")
    return TDatum(tokens, [int(x) for x in tgt], [float(x) for x in w])


def _batched(arrays: list[np.ndarray], dtype: pb.DType.ValueType, np_dtype: Any) -> Any:
    offs = [0]
    parts = []
    for a in arrays:
        b = np.asarray(a, dtype=np_dtype).tobytes()
        parts.append(b)
        offs.append(offs[-1] + len(b))
    return pb.BatchedTensor(data=b"".join(parts), offsets=np.asarray(offs, dtype=np.int64).tobytes(), dtype=dtype)


def encode_forward_backward_output(per_datum: dict[str, list[np.ndarray]], metrics: dict[str, float],
                                   n: int) -> bytes:
    """A protobuf ForwardBackwardOutput: one ArrayRecord with float32 fields per datum, ``name:reduction`` metrics."""
    rec = pb.ArrayRecord(type_tag="ArrayRecord", num_datums=n)
    for name, arrays in per_datum.items():
        rec.fields[name].CopyFrom(_batched(arrays, pb.DTYPE_FLOAT32, np.float32))
    out = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    out.loss_fn_outputs.append(rec)
    for k, v in metrics.items():
        assert k.count(":") == 1, k  # the SDK splits every key into name:reduction
        out.metrics[k] = float(v)
    return out.SerializeToString()


def encode_sample_response(sequences: list[tuple[list[int], list[float] | None, str]],
                           prompt_logprobs: list[float | None] | None) -> bytes:
    """A protobuf SampleResponse: (tokens, logprobs, "stop"|"length") per sequence; NaN for a missing logprob."""
    out = pb.SampleResponse()
    for toks, lps, reason in sequences:
        s = out.sequences.add()
        s.tokens = np.asarray(toks, dtype=np.int32).tobytes()
        if lps is not None:
            s.logprobs = np.asarray(lps, dtype=np.float32).tobytes()
        s.stop_reason = pb.STOP_REASON_STOP if reason == "stop" else pb.STOP_REASON_LENGTH
    if prompt_logprobs is not None:
        out.prompt_logprobs = np.asarray([np.nan if x is None else x for x in prompt_logprobs],
                                         dtype=np.float32).tobytes()
    return out.SerializeToString()
