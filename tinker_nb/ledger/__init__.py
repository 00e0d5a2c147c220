"""Tamper-evident audit ledger: hash chain + RFC 9162 Merkle tree + signed checkpoints (torch-free)."""

from .log import AuditLedger, Entry, SignedCheckpoint, VerifyReport, checkpoint_message
from .merkle import verify_consistency, verify_inclusion

__all__ = ["AuditLedger", "Entry", "SignedCheckpoint", "VerifyReport", "checkpoint_message",
           "verify_inclusion", "verify_consistency"]
