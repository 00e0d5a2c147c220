"""TGSP v1 constants: entry names, contexts, size limits, time format (docs/TGSP_SPEC.md). Torch-free."""

from __future__ import annotations

from datetime import datetime, timezone

FORMAT = "tgsp/v1"
SIGN_CONTEXT = b"tgsp/v1"  # composite-signature application context for manifest.sig
HPKE_INFO = b"tgsp/v1/package-key"  # HPKE info label for sealing the package key (+ package id, see kem.py)
WEIGHTS_CONTEXT_PREFIX = b"tgsp/v1/weights|"  # Cobblestone context = prefix ‖ package id (ASCII)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
WEIGHTS = "weights.enc"
RECIPIENTS = "recipients.json"
EVIDENCE = "evidence.json"
CERTIFICATE = "dp_certificate.json"
ENTRIES = (MANIFEST, SIGNATURE, WEIGHTS, RECIPIENTS, EVIDENCE, CERTIFICATE)  # also the order written
HASHED = (WEIGHTS, RECIPIENTS, EVIDENCE, CERTIFICATE)  # entries whose digests the manifest lists

MiB = 1 << 20
# No ZIP64 (and no extra fields) in TGSP v1: the whole archive stays below 2 GiB, where every size and
# offset fits the classic zip fields (Python's zipfile switches to ZIP64 at 2^31 - 1).
MAX_SIZES = {MANIFEST: 1 * MiB, SIGNATURE: 64 * 1024, WEIGHTS: (2 << 30) - 64 * MiB, RECIPIENTS: 4 * MiB,
             EVIDENCE: 16 * MiB, CERTIFICATE: 1 * MiB}
MAX_ARCHIVE = (2 << 30) - 32 * MiB  # sum of the six entries; headers and directory add < 1 KiB
MAX_RECIPIENTS = 1000
SEALED_KEY_LEN = 1120 + 32 + 16  # X-Wing enc ‖ AES-256-GCM(32-byte package key) ‖ tag
CLOCK_SKEW_S = 600  # a package "created" further than this in the future is refused

EVIDENCE_FORMAT = "tgsp/v1/evidence"
CERTIFICATE_FORMAT = "tgsp/v1/dp-certificate"
RECIPIENTS_FORMAT = "tgsp/v1/recipients"
WEIGHTS_ENCRYPTION = "C2SP-chunked-encryption/Cobblestone-256"


def format_time(t: datetime) -> str:
    """UTC, whole seconds, ``YYYY-MM-DDTHH:MM:SSZ`` (the only time format TGSP v1 writes or accepts)."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: object) -> datetime:
    """Inverse of :func:`format_time`; ValueError for anything else."""
    if not isinstance(s, str) or len(s) != 20 or not s.endswith("Z"):
        raise ValueError(f"not a TGSP time: {s!r}")
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
