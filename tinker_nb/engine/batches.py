"""Turn what callers pass to ``forward_backward`` into checked, padded tensors.

Accepted forms:

* a dict of ``input_ids`` (required), ``attention_mask`` and ``labels`` (HF convention: aligned with
  ``input_ids``, shifted inside the loss, ``-100`` = ignore), as tensors or rectangular lists;
* a list of per-example dicts with the same keys (ragged lengths allowed; they are right-padded),
  which also covers Tinker-style ``Datum`` objects (``model_input.to_ints()`` and
  ``loss_fn_inputs["target_tokens"/"weights"]``);
* a list of strings (tokenised with the model's tokenizer).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DataError

__all__ = ["IGNORE_INDEX", "Batch", "collate", "to_batch"]

IGNORE_INDEX = -100
_KEYS = {"input_ids", "attention_mask", "labels"}


@dataclass
class Batch:
    """A checked, right-padded batch; ``labels`` already carry ``-100`` on padding."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def _as_2d(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    else:
        if isinstance(value, (list, tuple)) and value and all(isinstance(x, int) for x in value):
            raise DataError(f"batch[{name!r}] is 1-D (one flat list); wrap a single example as [[...]].")
        try:
            rows = [list(r) for r in value]
        except TypeError:
            raise DataError(f"batch[{name!r}] must be a 2-D tensor or a list of lists, got {type(value).__name__}.") from None
        lengths = {len(r) for r in rows}
        if len(lengths) > 1:
            raise DataError(f"batch[{name!r}] is ragged (row lengths {sorted(lengths)}); pad to one length and pass "
                            "attention_mask, or pass a list of per-example dicts, which are padded for you.")
        if not all(isinstance(x, numbers.Integral) for r in rows for x in r):  # 1.5 must not become 1
            raise DataError(f"batch[{name!r}] must contain integers only.")
        try:
            t = torch.tensor(rows, dtype=torch.long) if rows else torch.zeros((0, 0), dtype=torch.long)
        except (TypeError, ValueError, OverflowError, RuntimeError):
            raise DataError(f"batch[{name!r}] must contain integers only.") from None
    if t.dim() == 1:
        raise DataError(f"batch[{name!r}] is 1-D (shape {tuple(t.shape)}); wrap a single example as [[...]].")
    if t.dim() != 2:
        raise DataError(f"batch[{name!r}] must be 2-D [batch, seq_len], got shape {tuple(t.shape)}.")
    if t.is_floating_point() or t.is_complex() or (t.dtype == torch.bool and name != "attention_mask"):
        raise DataError(f"batch[{name!r}] must hold integer ids, got dtype {t.dtype}.")
    return t.long()


def _from_mapping(batch: Mapping) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    unknown = set(batch) - _KEYS
    if unknown:
        raise DataError(f"unknown batch keys {sorted(unknown)}; expected input_ids, attention_mask, labels.")
    if "input_ids" not in batch:
        raise DataError("batch has no 'input_ids'; pass a dict with input_ids (and optionally attention_mask, labels).")
    ids = _as_2d("input_ids", batch["input_ids"])
    mask = _as_2d("attention_mask", batch["attention_mask"]) if "attention_mask" in batch else torch.ones_like(ids)
    labels = _as_2d("labels", batch["labels"]) if "labels" in batch else ids.clone()
    for name, t in (("attention_mask", mask), ("labels", labels)):
        if t.shape != ids.shape:
            raise DataError(f"batch[{name!r}] has shape {tuple(t.shape)} but input_ids has {tuple(ids.shape)}; they must match.")
    return ids, mask, labels


def _datum_fields(item: Any) -> dict:
    if isinstance(item, Mapping):
        return dict(item)
    mi = getattr(item, "model_input", None)
    if mi is not None and hasattr(mi, "to_ints"):  # Tinker Datum
        ids = list(mi.to_ints())
        lfi = getattr(item, "loss_fn_inputs", {}) or {}
        tgt = lfi.get("target_tokens")
        w = lfi.get("weights")
        tgt = list(tgt.tolist() if hasattr(tgt, "tolist") else tgt) if tgt is not None else None
        w = list(w.tolist() if hasattr(w, "tolist") else w) if w is not None else None
        # Tinker targets are next-token aligned: target_tokens[t] is predicted at position t. In the HF
        # convention (labels aligned with inputs, shifted inside the loss) the target of the last position
        # needs one more input slot: append it to the inputs (causal: it changes no earlier prediction) and
        # prepend one ignored label, so every target token, the last one included, is trained.
        if tgt is not None:
            if len(tgt) != len(ids):
                raise DataError(f"a Datum's target_tokens ({len(tgt)}) must have one entry per input token ({len(ids)}).")
            labels = [IGNORE_INDEX] + [
                int(t) if (w is None or float(w[i]) > 0) else IGNORE_INDEX for i, t in enumerate(tgt)]
            return {"input_ids": ids + [int(tgt[-1])] if tgt else ids, "labels": labels[: len(ids) + 1]}
        return {"input_ids": ids}
    raise DataError(f"batch items must be dicts or Tinker Datum objects, got {type(item).__name__}.")


def _int_list(i: int, key: str, value: Any) -> list[int]:
    seq = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) \
            or not all(isinstance(x, numbers.Integral) for x in seq):  # 1.5 must not become 1
        raise DataError(f"example {i}: {key!r} must be a flat list of integer ids.")
    return [int(x) for x in seq]


def collate(examples: Sequence[Mapping], *, pad_id: int) -> dict:
    """Right-pad per-example dicts into a rectangular dict of tensors."""
    if not examples:
        return {"input_ids": torch.zeros((0, 1), dtype=torch.long),
                "attention_mask": torch.zeros((0, 1), dtype=torch.long),
                "labels": torch.full((0, 1), IGNORE_INDEX, dtype=torch.long)}
    rows = []
    for i, ex in enumerate(examples):
        ex = _datum_fields(ex)
        unknown = set(ex) - _KEYS
        if unknown:
            raise DataError(f"example {i} has unknown keys {sorted(unknown)}; expected input_ids, attention_mask, labels.")
        if "input_ids" not in ex:
            raise DataError(f"example {i} has no 'input_ids'.")
        ids = _int_list(i, "input_ids", ex["input_ids"])
        labels = _int_list(i, "labels", ex.get("labels", ids))
        mask = _int_list(i, "attention_mask", ex.get("attention_mask", [1] * len(ids)))
        if not ids:
            raise DataError(f"example {i} has no tokens.")
        if len(labels) != len(ids) or len(mask) != len(ids):
            raise DataError(f"example {i}: labels/attention_mask length differs from input_ids ({len(ids)}).")
        rows.append((ids, mask, labels))
    width = max(len(r[0]) for r in rows)
    out_ids, out_mask, out_labels = [], [], []
    for ids, mask, labels in rows:
        pad = width - len(ids)
        out_ids.append(ids + [pad_id] * pad)
        out_mask.append(mask + [0] * pad)
        out_labels.append(labels + [IGNORE_INDEX] * pad)
    return {"input_ids": torch.tensor(out_ids), "attention_mask": torch.tensor(out_mask),
            "labels": torch.tensor(out_labels)}


def to_batch(batch: Any, *, tokenizer: Any, vocab_size: int, max_len: int, allow_empty: bool = False,
             encode: Any = None) -> Batch:
    """Validate and normalise ``batch``; raise DataError with what is wrong and how to fix it.

    Strings are tokenised with ``encode`` (the session's one tokenisation rule) when given.
    """
    if isinstance(batch, Mapping):
        ids, mask, labels = _from_mapping(batch)
    elif isinstance(batch, (list, tuple)):
        if not batch and not allow_empty:
            raise DataError("the batch is empty; pass at least one example (empty Poisson draws come from poisson_batches()).")
        if batch and all(isinstance(x, str) for x in batch):
            enc = [{"input_ids": encode(x) if encode is not None else tokenizer(x)["input_ids"] + [tokenizer.eos_token_id]}
                   for x in batch]
            d = collate(enc, pad_id=tokenizer.pad_token_id)
        else:
            d = collate(list(batch), pad_id=tokenizer.pad_token_id)
        ids, mask, labels = d["input_ids"], d["attention_mask"], d["labels"]
    else:
        raise DataError(f"forward_backward expects a dict of input_ids/attention_mask/labels, a list of examples, "
                        f"or a list of strings; got {type(batch).__name__}.")
    if ids.shape[0] == 0 and not allow_empty:
        raise DataError("the batch has no examples; pass at least one (empty Poisson draws come from poisson_batches()).")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = int(ids.max()) if int(ids.max()) >= vocab_size else int(ids.min())
        raise DataError(f"token id {bad} is outside the model's vocabulary [0, {vocab_size}); "
                        "tokenise with this model's tokenizer.")
    if ids.shape[1] > max_len:
        raise DataError(f"sequence length {ids.shape[1]} exceeds the limit of {max_len} tokens; "
                        "truncate the examples or raise TrainingConfig.max_seq_len (up to the model's maximum).")
    if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise DataError("attention_mask must contain only 0 and 1.")
    valid = (labels == IGNORE_INDEX) | ((labels >= 0) & (labels < vocab_size))
    if labels.numel() and not bool(valid.all()):
        raise DataError(f"labels must be token ids in [0, {vocab_size}) or -100 (ignored).")
    labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
    return Batch(ids, mask, labels)
