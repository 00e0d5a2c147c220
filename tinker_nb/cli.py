"""`tinker-nb` command line: keys, package, verify, inspect, open/export, audit verify.

Exit codes: 0 success; 1 verification failed (signature, trust, integrity, package shape);
2 usage error; 3 key access (wrong passphrase, not a recipient, missing key); 4 other tinker_nb error.
Errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import (ConfigError, IntegrityError, KeyAccessError, PackageError, SignatureError, TinkerError,
                     TrustError)

__all__ = ["main"]

EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_KEYS, EXIT_OTHER = 0, 1, 2, 3, 4


def _passphrase(args: argparse.Namespace, what: str, *, confirm: bool = False) -> str:
    env = os.environ.get("TINKER_NB_PASSPHRASE")
    if getattr(args, "passphrase_env", None):
        env = os.environ.get(args.passphrase_env)
        if env is None:
            raise ConfigError(f"environment variable {args.passphrase_env} is not set.")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise ConfigError(f"a passphrase for the {what} is needed: set TINKER_NB_PASSPHRASE or --passphrase-env VAR.")
    p = getpass.getpass(f"passphrase for the {what}: ")
    if confirm and getpass.getpass("again: ") != p:
        raise ConfigError("passphrases do not match.")
    return p


def _trust(paths: list[str]) -> list:
    from .security.signing import load_public_key

    return [load_public_key(p) for p in paths]


def cmd_keygen(args) -> int:
    from .security.kem import RecipientIdentity
    from .security.signing import HybridSigner

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; use --force to overwrite.")
    pw = _passphrase(args, f"new {args.kind} key", confirm=True)
    key = HybridSigner.generate() if args.kind == "publisher" else RecipientIdentity.generate()
    key.save(out, passphrase=pw)
    pub = Path(str(out) + ".pub")
    key.public_key().save(pub)
    print(json.dumps({"kind": args.kind, "key_id": key.key_id, "private": str(out), "public": str(pub)}))
    return EXIT_OK


def cmd_verify(args) -> int:
    from .tgsp import verify_package

    rep = verify_package(args.package, trust=_trust(args.trust))
    if args.json:
        print(json.dumps(rep.to_dict(), indent=1))
    else:
        print(f"OK {args.package}: package {rep.package_id}, publisher {rep.publisher_key_id[:16]}…, "
              f"expires {rep.expires}")
        for c in rep.checks:
            print(f"  ✓ {c}")
    return EXIT_OK


def cmd_inspect(args) -> int:
    from .tgsp.package import read_entries

    e = read_entries(args.package)
    doc = {name: json.loads(e[name]) for name in ("manifest.json", "dp_certificate.json", "evidence.json")}
    if args.json:
        print(json.dumps(doc, indent=1))
        return EXIT_OK
    m, c, ev = doc["manifest.json"], doc["dp_certificate.json"], doc["evidence.json"]
    print(f"package   {m['package_id']}  ({m['format']}, created {m['created']}, expires {m['expires']})")
    print(f"base      {m['base_model']['ref']}  sha256 {str(m['base_model'].get('sha256'))[:16]}…")
    print(f"lora      rank {m['lora_config']['rank']}, alpha {m['lora_config']['alpha']}, "
          f"targets {', '.join(m['lora_config']['target_modules'])}")
    print(f"publisher {m['publisher']['key_id'][:16]}… ({m['signature_algorithm']})")
    print(f"privacy   {c['statement']}")
    print(f"data      {ev['dataset']['size']} records, sha256 {str(ev['dataset']['sha256'])[:16]}…; "
          f"{ev['steps']} steps; audit checkpoint of {ev['audit']['checkpoint']['size']} entries")
    print("(not verified: run `tinker-nb verify` with a pinned publisher key)")
    return EXIT_OK


def _identity(args):
    from .security.kem import load_identity

    return load_identity(args.identity, passphrase=_passphrase(args, "recipient identity"))


def cmd_export(args) -> int:
    from .tgsp import export_peft

    out = export_peft(args.package, args.out, identity=_identity(args), trust=_trust(args.trust),
                      base_model_path=args.base_model)
    print(f"PEFT adapter written to {out}")
    return EXIT_OK


def cmd_open(args) -> int:
    from .tgsp import open_package

    edge = open_package(args.package, identity=_identity(args), trust=_trust(args.trust),
                        base_model_path=args.base_model)
    res = edge.sample(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    for s in res.samples:
        print(json.dumps({"prompt": s.prompt, "completion": s.completion, "finish_reason": s.finish_reason}))
    return EXIT_OK


def cmd_audit_verify(args) -> int:
    from .ledger import AuditLedger
    from .security.signing import load_public_key

    path = Path(args.workspace) / "audit.sqlite"
    if not path.exists():
        raise ConfigError(f"no audit ledger at {path}.")
    pk = load_public_key(args.trust) if args.trust else _workspace_public_key(Path(args.workspace))
    rep = AuditLedger(path, tenant=args.tenant).verify(public_key=pk)
    print(json.dumps(rep.to_dict()) if args.json else
          (f"OK: {rep.entries_checked} entries, {rep.checkpoints_checked} signed checkpoints, root {rep.root_hash}"
           if rep.ok else f"BROKEN at entry {rep.first_bad_seq}: {rep.reason}"))
    return EXIT_OK if rep.ok else EXIT_VERIFY


def _workspace_public_key(ws: Path):
    from .security.signing import load_public_key

    p = ws / "identity.json"
    if not p.exists():
        return None
    d = json.loads(p.read_text())
    return load_public_key({"algorithm": "MLDSA65-Ed25519-SHA512", "public_key": d["public_key"], "key_id": d["key_id"]})


def cmd_package(args) -> int:
    from . import ServiceClient, TrainingConfig
    from .security.kem import load_recipient
    from .security.signing import load_signer

    svc = ServiceClient(args.workspace, tenant=args.tenant, passphrase=os.environ.get("TINKER_NB_WORKSPACE_PASSPHRASE"))
    _, _, info = svc.store.load(args.artifact)
    blobs, _, _ = svc.store.load(args.artifact)
    cfg = TrainingConfig.from_dict(json.loads(blobs["state.json"])["config"])
    signer = load_signer(args.signer, passphrase=_passphrase(args, "publisher key")) if args.signer else None
    tc = svc.create_training_client(cfg)
    try:
        from .tgsp.session import package_checkpoint

        st = json.loads(blobs["state.json"])
        if st.get("dataset_sha256"):
            raise ConfigError("this checkpoint was trained on an attached data set: package it from the notebook "
                              "(tc.package) where the data set is attached, so evidence and accounting are exact.")
        m = package_checkpoint(tc, args.artifact, args.out, recipients=[load_recipient(r) for r in args.recipient],
                               signer=signer, expires_in_days=args.expires_days)
    finally:
        tc.close()
    print(json.dumps({"package": args.out, "package_id": m["package_id"]}))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinker-nb", description="tinker_nb: keys, signed packages and audit checks.")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="create a passphrase-protected publisher or recipient identity")
    k.add_argument("kind", choices=["publisher", "recipient"])
    k.add_argument("--out", required=True, help="private key file (the public key goes to OUT.pub)")
    k.add_argument("--force", action="store_true")
    k.add_argument("--passphrase-env", help="read the passphrase from this environment variable")
    k.set_defaults(fn=cmd_keygen)
    v = sub.add_parser("verify", help="verify a package against pinned publisher keys")
    v.add_argument("package")
    v.add_argument("--trust", action="append", required=True, help="publisher public key file (repeatable)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_verify)
    i = sub.add_parser("inspect", help="show manifest, DP certificate and evidence (no verification)")
    i.add_argument("package")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_inspect)
    for name, fn, hlp in (("export", cmd_export, "write a PEFT adapter folder"),
                          ("open", cmd_open, "verify, decrypt and sample from a package")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("package")
        s.add_argument("--identity", required=True, help="recipient identity file")
        s.add_argument("--trust", action="append", required=True)
        s.add_argument("--base-model", help="local base model folder (default: the manifest's ref)")
        s.add_argument("--passphrase-env")
        if name == "export":
            s.add_argument("--out", required=True)
        else:
            s.add_argument("--prompt", action="append", required=True)
            s.add_argument("--max-tokens", type=int, default=32)
            s.add_argument("--temperature", type=float, default=0.0)
            s.add_argument("--seed", type=int, default=None)
        s.set_defaults(fn=fn)
    pk = sub.add_parser("package", help="package a saved checkpoint (artifact id) of a workspace")
    pk.add_argument("artifact")
    pk.add_argument("--workspace", default=".tinker_nb")
    pk.add_argument("--tenant", default="default")
    pk.add_argument("--out", required=True)
    pk.add_argument("--recipient", action="append", required=True)
    pk.add_argument("--signer", help="publisher key file (default: the workspace identity)")
    pk.add_argument("--expires-days", type=float, default=365.0)
    pk.add_argument("--passphrase-env")
    pk.set_defaults(fn=cmd_package)
    a = sub.add_parser("audit", help="audit ledger operations")
    asub = a.add_subparsers(dest="audit_cmd", required=True)
    av = asub.add_parser("verify", help="verify a workspace's ledger")
    av.add_argument("--workspace", default=".tinker_nb")
    av.add_argument("--tenant", default="default")
    av.add_argument("--trust", help="public key that signs checkpoints (default: the workspace identity)")
    av.add_argument("--json", action="store_true")
    av.set_defaults(fn=cmd_audit_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        return args.fn(args)
    except (SignatureError, TrustError, IntegrityError, PackageError) as exc:
        print(f"tinker-nb: verification failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_VERIFY
    except KeyAccessError as exc:
        print(f"tinker-nb: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_KEYS
    except ConfigError as exc:
        print(f"tinker-nb: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TinkerError as exc:
        print(f"tinker-nb: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_OTHER
    except KeyboardInterrupt:
        print("tinker-nb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


_ = Any
