"""Per-sequence causal-LM loss.

Each example's loss is the SUM of its own token losses, so one example's gradient never depends on
the others in the batch (Hugging Face's ``outputs.loss`` is a token mean over the whole batch and
couples examples, which breaks per-example sensitivity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batches import IGNORE_INDEX

__all__ = ["per_sequence_loss"]


def per_sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss per sequence [B], target-token count per sequence [B]) for HF-aligned ``labels``."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    tok = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none",
    ).view(shift_labels.shape)
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1)
    return tok.sum(dim=1), counts
