"""Tamper-evident audit ledger: hash chain + RFC 9162 Merkle tree + signed checkpoints (torch-free)."""

from .log import (
    SIGNED_AFTER,
    AuditLedger,
    Entry,
    SignedCheckpoint,
    VerifyReport,
    checkpoint_message,
    load_checkpoint_file,
)
from .merkle import verify_consistency, verify_inclusion

__all__ = [
    "SIGNED_AFTER",
    "AuditLedger",
    "Entry",
    "SignedCheckpoint",
    "VerifyReport",
    "checkpoint_message",
    "load_checkpoint_file",
    "verify_consistency",
    "verify_inclusion",
]
