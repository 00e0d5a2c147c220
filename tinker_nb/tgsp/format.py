"""TGSP v1 constants: entry names, contexts, limits (see docs/TGSP_SPEC.md)."""

from __future__ import annotations

FORMAT = "tgsp/v1"
SIGN_CONTEXT = b"tgsp/v1"
HPKE_INFO = b"tgsp/v1/package-key"
WEIGHTS_CONTEXT_PREFIX = b"tgsp/v1/weights|"

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
WEIGHTS = "weights.enc"
RECIPIENTS = "recipients.json"
EVIDENCE = "evidence.json"
CERTIFICATE = "dp_certificate.json"
ENTRIES = (MANIFEST, SIGNATURE, WEIGHTS, RECIPIENTS, EVIDENCE, CERTIFICATE)
HASHED = (WEIGHTS, RECIPIENTS, EVIDENCE, CERTIFICATE)  # digests listed in the manifest

MAX_SIZES = {MANIFEST: 1 << 20, SIGNATURE: 1 << 16, WEIGHTS: 4 << 30, RECIPIENTS: 1 << 20,
             EVIDENCE: 16 << 20, CERTIFICATE: 1 << 20}
