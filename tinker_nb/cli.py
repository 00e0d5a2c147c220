"""`tinker-nb` command line: keys, package, verify, inspect, open/export, audit (docs/CLI.md).

Exit codes: 0 success; 1 verification failed (signature, trust, integrity, package shape, broken,
empty or unverifiable ledger); 2 usage, configuration or input error; 3 key access (key file missing,
unreadable, a folder, or the wrong kind of key; wrong passphrase; not a recipient); 4 any other
error; 130 interrupted. Errors are one line on stderr, never a traceback (set TINKER_NB_DEBUG=1 to
get one), and give the CLI's flags and variables as advice, never Python arguments.
``verify``, ``inspect``, ``checkpoints``, ``package`` and ``audit`` never import torch.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import (
    ConfigError,
    DataError,
    IntegrityError,
    KeyAccessError,
    PackageError,
    SignatureError,
    TinkerError,
    TrustError,
)

if TYPE_CHECKING:
    from .security.kem import RecipientPublicKey
    from .security.signing import HybridPublicKey

__all__ = ["EXIT_KEYS", "EXIT_OK", "EXIT_OTHER", "EXIT_USAGE", "EXIT_VERIFY", "build_parser", "main"]

EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_KEYS, EXIT_OTHER, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
PASSPHRASE_ENV = "TINKER_NB_PASSPHRASE"
WORKSPACE_PASSPHRASE_ENV = "TINKER_NB_WORKSPACE_PASSPHRASE"
TENANT_PASSPHRASE_ENV = "TINKER_NB_TENANT_PASSPHRASE"

# Lower layers phrase advice for Python callers; the CLI says the same with its own flags.
# Messages written as "(Python: …; CLI: …)" keep only the CLI part.
_CLI_WORDING = [
    (re.compile(r"\(Python: [^;()]*(?:\([^()]*\)[^;()]*)*; CLI: ([^()]*)\)"), r"(\1)"),
    (re.compile(r"pass overwrite=True"), "use --force"),
    (re.compile(r"pass base_model_path= \(or --base-model\)"), "use --base-model DIR"),
    (re.compile(r"pass trust=\[publisher public key, …\]"), "use --trust PUB"),
    (re.compile(r"trust=/--trust"), "--trust"),
    (re.compile(r"list_checkpoints\(\)"), "`tinker-nb checkpoints`"),
    (re.compile(r"(`[^`]+`) \(CLI: \1\)"), r"\1"),  # "X (CLI: X)" once the Python advice became X
    (re.compile(r"lower max_tokens"), "lower --max-tokens"),
    (re.compile(r"\+ max_tokens \("), "+ --max-tokens ("),
    (re.compile(r"pass passphrase=\.\.\."), f"set ${WORKSPACE_PASSPHRASE_ENV}"),
]


def cli_wording(text: str) -> str:
    """One line, with Python-argument advice replaced by the CLI's flags and environment variables."""
    out = " ".join(str(text).split())
    for pat, repl in _CLI_WORDING:
        out = pat.sub(repl, out)
    return out


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of argparse's usage block
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------------- helpers
def _passphrase(args: argparse.Namespace, what: str, *, confirm: bool = False) -> str:
    """From --passphrase-env VAR, else $TINKER_NB_PASSPHRASE, else an interactive prompt (never argv)."""
    var = getattr(args, "passphrase_env", None)
    if var:
        if os.environ.get(var) is None:
            raise ConfigError(f"environment variable {var} (from --passphrase-env) is not set.")
        return os.environ[var]
    if os.environ.get(PASSPHRASE_ENV) is not None:
        return os.environ[PASSPHRASE_ENV]
    if not sys.stdin.isatty():
        raise ConfigError(f"a passphrase for the {what} is needed: set {PASSPHRASE_ENV} or use --passphrase-env VAR.")
    p = getpass.getpass(f"passphrase for the {what}: ")
    if confirm and getpass.getpass("repeat it: ") != p:
        raise ConfigError("the passphrases do not match.")
    return p


def _trust(paths: list[str]) -> list:
    from .security.signing import load_public_key

    return [load_public_key(p) for p in paths]


def _identity(args: argparse.Namespace):
    from .security.kem import load_identity

    return load_identity(args.identity, passphrase=_passphrase(args, "recipient identity"))


def _service(args: argparse.Namespace):
    """Open an EXISTING workspace and tenant (the CLI never creates one)."""
    from .security.keys import keystore_info

    ws = Path(args.workspace)
    info = keystore_info(ws)
    if args.tenant in info.shredded:
        raise KeyAccessError(f"tenant {args.tenant!r} of workspace {ws} was crypto-shredded; its checkpoints are "
                             "unrecoverable.")
    if args.tenant not in info.tenants:
        raise ConfigError(f"workspace {ws} has no tenant {args.tenant!r} (it has: {', '.join(info.tenants) or 'none'}).")
    var = getattr(args, "workspace_passphrase_env", None) or WORKSPACE_PASSPHRASE_ENV
    passphrase = os.environ.get(var)
    if info.passphrase_protected and passphrase is None:
        raise KeyAccessError(f"workspace {ws} is protected by a passphrase: set ${var}"
                             + ("" if getattr(args, "workspace_passphrase_env", None) else
                                " (or name another variable with --workspace-passphrase-env VAR)") + ".")
    if args.key_file and info.passphrase_protected:
        raise ConfigError(f"workspace {ws} is protected by a passphrase, not a key file; drop --key-file.")
    from .client import ServiceClient

    svc = ServiceClient(ws, tenant=args.tenant, passphrase=passphrase if info.passphrase_protected else None,
                        key_file=args.key_file)
    if args.tenant in info.tenant_secrets:
        tvar = getattr(args, "tenant_passphrase_env", None) or TENANT_PASSPHRASE_ENV
        if os.environ.get(tvar) is None:
            raise KeyAccessError(f"tenant {args.tenant!r} is protected by its own passphrase: set ${tvar}"
                                 + ("" if getattr(args, "tenant_passphrase_env", None) else
                                    " (or --tenant-passphrase-env VAR)") + ".")
        svc.keystore.unlock_tenant(args.tenant, os.environ[tvar])
    return svc


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, sort_keys=True, default=str))


# ---------------------------------------------------------------------- commands
def _check_out_folder(out: Path) -> None:
    """An output file's folder must exist (the CLI creates no folders for single files): exit 2, not 4."""
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist.")


def cmd_keygen(args: argparse.Namespace) -> int:
    from .security.kem import RecipientIdentity
    from .security.signing import HybridSigner

    out = Path(args.out)
    pub = Path(str(out) + ".pub")
    for p in (out, pub):
        if p.is_dir():
            raise KeyAccessError(f"cannot write key file {p}: it is a folder; give a file name (e.g. {p}/{args.kind}.key).")
    if (out.exists() or pub.exists()) and not args.force:
        raise ConfigError(f"{out} or {pub} exists; use --force to overwrite.")
    _check_out_folder(out)
    pw = _passphrase(args, f"new {args.kind} key", confirm=True)
    if len(pw) < 8:
        raise ConfigError("use a passphrase of at least 8 characters.")
    key = HybridSigner.generate() if args.kind == "publisher" else RecipientIdentity.generate()
    key.save(out, passphrase=pw)
    key.public_key().save(pub)
    print(json.dumps({"kind": args.kind, "key_id": key.key_id, "private": str(out), "public": str(pub)}))
    return EXIT_OK


def cmd_pubkey(args: argparse.Namespace) -> int:
    from .security.kem import load_recipient
    from .security.signing import load_public_key

    if bool(args.workspace) == bool(args.key):
        raise ConfigError("give either a private key file or --workspace WS.")
    key: HybridPublicKey | RecipientPublicKey
    if args.workspace:
        from .security.identity import read_workspace_identity

        key = read_workspace_identity(args.workspace)
    else:
        p = Path(args.key)
        if p.is_dir():
            raise KeyAccessError(f"key file {p} is a folder; give the key file itself.")
        if not p.is_file():
            raise KeyAccessError(f"key file {p} does not exist.")
        try:
            d = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError):
            raise KeyAccessError(f"key file {p} is not valid JSON.") from None
        if not isinstance(d, dict):
            raise KeyAccessError(f"key file {p} is not a tinker-nb key file.")
        if d.get("type") in ("tinker-nb/recipient-identity", "tinker-nb/recipient"):
            key = load_recipient({k: d.get(k) for k in ("suite", "public_key", "key_id")})  # the public half only
        else:
            key = load_public_key(d)
    if args.out:
        if Path(args.out).is_dir():
            raise KeyAccessError(f"cannot write public key file {args.out}: it is a folder.")
        _check_out_folder(Path(args.out))
        key.save(args.out)
    else:
        print(json.dumps(key.to_dict(), indent=1))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from .tgsp import verify_package

    rep = verify_package(args.package, trust=_trust(args.trust))
    if args.json:
        _print_json(rep.to_dict())
    else:
        print(f"OK {args.package}")
        print(str(rep))
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from .tgsp import inspect_package

    doc = inspect_package(args.package)
    if args.json:
        _print_json({**doc, "verified": False})
        return EXIT_OK
    m, c, ev = doc["manifest.json"], doc["dp_certificate.json"], doc["evidence.json"]
    lc, bm = m.get("lora_config", {}), m.get("base_model", {})
    ds, audit = ev.get("dataset", {}), ev.get("audit", {})
    print("NOT VERIFIED: run `tinker-nb verify` with the publisher's pinned public key before trusting this.")
    print(f"package    {m.get('package_id')} ({m.get('format')}), manifest sha256 {doc['manifest_sha256']}")
    print(f"created    {m.get('created')}   expires {m.get('expires')}")
    print(f"publisher  {m.get('publisher', {}).get('key_id')} ({m.get('signature_algorithm')})")
    print(f"base model {bm.get('ref')} ({len(bm.get('weights') or {})} weight files pinned by SHA-256)")
    print(f"LoRA       rank {lc.get('rank')}, alpha {lc.get('alpha')}, targets {', '.join(lc.get('target_modules', []))}")
    print(f"recipients {len(doc['recipients.json'])}: " + ", ".join(str(k)[:16] + "…" for k in doc["recipients.json"]))
    print(f"privacy    {c.get('statement')}")
    if c.get("dp"):
        print(f"           σ={c.get('noise_multiplier')}, C={c.get('max_grad_norm')}, q={c.get('sample_rate')}, "
              f"steps={c.get('steps')}, δ={c.get('delta')}, ε={c.get('epsilon')} ({c.get('accountant')}), "
              f"RDP ε={c.get('epsilon_rdp')}, sampling {c.get('sampling')}, valid={c.get('accounting_valid')}")
    print(f"data       {ds.get('size')} records, sha256 {ds.get('sha256')} (the data is not in the package)")
    print(f"training   {ev.get('steps')} steps; source checkpoint {(ev.get('source_checkpoint') or {}).get('artifact_id')}")
    print(f"audit      ledger checkpoint of {audit.get('checkpoint', {}).get('size')} entries, "
          f"{len(audit.get('entries', []))} proven operations")
    return EXIT_OK


def _quiet_ml_stack() -> None:
    """No progress bars or library chatter before our one-line result or error (open/export)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:  # noqa: BLE001 - transformers missing: the loader says so itself
        pass


def cmd_export(args: argparse.Namespace) -> int:
    from .tgsp import export_peft

    _quiet_ml_stack()
    out = export_peft(args.package, args.out, identity=_identity(args), trust=_trust(args.trust),
                      base_model_path=args.base_model, overwrite=args.force)
    print(json.dumps({"peft_adapter": str(out)}))
    return EXIT_OK


def cmd_open(args: argparse.Namespace) -> int:
    from .tgsp import open_package

    if args.max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1, got {args.max_tokens}.")
    _quiet_ml_stack()
    edge = open_package(args.package, identity=_identity(args), trust=_trust(args.trust),
                        base_model_path=args.base_model, device=args.device)
    res = edge.sample(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    for s in res.samples:
        print(json.dumps({"prompt": s.prompt, "completion": s.completion, "finish_reason": s.finish_reason}))
    return EXIT_OK


def cmd_checkpoints(args: argparse.Namespace) -> int:
    svc = _service(args)
    # store.list() authenticates every row against its file and the tenant key (IntegrityError -> exit 1).
    rows = [{"artifact_id": i.artifact_id, "name": i.name, "step": (i.public or {}).get("step"),
             "created": i.created} for i in svc.store.list()
            if (i.public or {}).get("kind", "training-state") == "training-state"]
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['artifact_id']}  step {r['step']!s:>6}  {r['name']}")
    return EXIT_OK


def cmd_package(args: argparse.Namespace) -> int:
    from .security.kem import load_recipient
    from .security.signing import load_signer
    from .tgsp.session import package_checkpoint

    recipients = [load_recipient(r) for r in args.recipient]
    signer = load_signer(args.signer, passphrase=_passphrase(args, "publisher key")) if args.signer else None
    svc = _service(args)
    from .storage import ArtifactNotFoundError

    try:
        m = package_checkpoint(svc, args.artifact, args.out, recipients=recipients, signer=signer,
                               expires_in_days=args.expires_days)
    except ArtifactNotFoundError as exc:
        msg = cli_wording(str(exc))
        raise ConfigError(msg if "tinker-nb checkpoints" in msg else f"{msg} (see `tinker-nb checkpoints`)") from None
    print(json.dumps({"package": args.out, "package_id": m["package_id"], "publisher": m["publisher"]["key_id"],
                      "expires": m["expires"]}))
    return EXIT_OK


def _ledger_path(args: argparse.Namespace) -> Path:
    ws = Path(args.workspace)
    path = ws / "audit.sqlite"
    if not path.is_file():
        raise ConfigError(f"no audit ledger at {path} (is {ws} a tinker_nb workspace? see --workspace).")
    return path


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .ledger import AuditLedger, load_checkpoint_file
    from .security.signing import load_public_key

    path = _ledger_path(args)
    ws = path.parent
    if args.trust:
        pk, source = load_public_key(args.trust), "pinned key"
    elif (ws / "identity.json").exists():
        from .security.identity import read_workspace_identity

        pk = read_workspace_identity(ws)
        source = "the workspace's own identity.json (pin an exported copy with --trust for an independent check)"
    elif args.allow_unsigned:
        pk, source = None, "none: checkpoint signatures NOT checked (--allow-unsigned)"
    else:
        raise SignatureError(f"cannot check the ledger's checkpoint signatures: no --trust key and {ws} has no "
                             "identity.json. Pin the workspace key with --trust PUB, or pass --allow-unsigned to "
                             "accept a chain-and-Merkle check without signatures.")
    trusted = [load_checkpoint_file(f) for f in (args.trusted_checkpoint or [])]
    led = AuditLedger(path, tenant=args.tenant, readonly=True)
    try:
        if any(cp.tenant != args.tenant for cp in trusted):
            raise ConfigError(f"a --trusted-checkpoint belongs to another tenant than --tenant {args.tenant!r}.")
        rep = led.verify(public_key=pk, trusted_checkpoints=trusted)
        latest = led.latest_checkpoint()
    finally:
        led.close()
    empty = rep.ok and rep.entries_checked == 0
    unsigned_head = rep.ok and not empty and (latest is None or latest.size != rep.entries_checked)
    doc = {**rep.to_dict(), "checkpoint_key": source, "trusted_checkpoints": len(trusted), "empty": empty,
           "head_signed": rep.ok and not empty and not unsigned_head}
    if empty:
        doc.update(ok=False, reason=f"the ledger has no entries for tenant {args.tenant!r} (wrong --tenant, or "
                                    "everything was deleted)")
    if args.json:
        _print_json(doc)
    elif empty:
        print(f"EMPTY: {doc['reason']}.")
    elif rep.ok:
        print(f"OK: {rep.entries_checked} entries, {rep.checkpoints_checked} signed checkpoints "
              f"({len(trusted)} kept outside the workspace), root {rep.root_hash}; checkpoint key: {source}")
        if unsigned_head:
            print(f"note: the last {rep.entries_checked - (latest.size if latest else 0)} entries are not covered by "
                  "a signed checkpoint yet; deleting them would not be detected.")
    else:
        print(f"BROKEN at entry {rep.first_bad_seq}: {rep.reason}")
    return EXIT_OK if rep.ok and not empty else EXIT_VERIFY


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from .ledger import AuditLedger

    path = _ledger_path(args)
    led = AuditLedger(path, tenant=args.tenant, readonly=True)
    try:
        cp, size = led.latest_checkpoint(), led.size()
    finally:
        led.close()
    if cp is None:
        raise ConfigError(f"the ledger has no signed checkpoint for tenant {args.tenant!r} yet (saves, packages and "
                          "key changes sign one).")
    text = json.dumps(cp.to_dict(), indent=1, sort_keys=True) + "\n"
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise ConfigError(f"--out {out} is a folder; give a file name.")
        if out.exists() and not args.force:
            raise ConfigError(f"{out} exists; use --force to overwrite.")
        _check_out_folder(out)
        from .fsio import atomic_write

        atomic_write(out, text.encode(), mode=0o644)
        print(json.dumps({"checkpoint": str(out), "size": cp.size, "root_hash": cp.root_hash,
                          "ledger_entries": size}))
    else:
        sys.stdout.write(text)
    if cp.size != size:
        print(f"tinker-nb: note: the ledger has {size} entries; this checkpoint covers {cp.size}.", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="tinker-nb", description="tinker_nb: keys, signed TGSP packages and audit checks. "
                                              "Exit codes: 0 ok, 1 verification failed, 2 usage, 3 key access, "
                                              "4 other error.")
    p.add_argument("--version", action="version", version=f"tinker-nb {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND")

    def pw(s: argparse.ArgumentParser) -> None:
        s.add_argument("--passphrase-env", metavar="VAR",
                       help=f"read the key passphrase from this environment variable (default ${PASSPHRASE_ENV}, "
                            "else a prompt)")

    def ws(s: argparse.ArgumentParser) -> None:
        s.add_argument("--workspace", default=os.environ.get("TINKER_NB_WORKSPACE", ".tinker_nb"))
        s.add_argument("--tenant", default="default")
        s.add_argument("--key-file", help="root key file of the workspace (if it was created with one)")
        s.add_argument("--workspace-passphrase-env", metavar="VAR",
                       help=f"variable holding the workspace passphrase (default ${WORKSPACE_PASSPHRASE_ENV})")
        s.add_argument("--tenant-passphrase-env", metavar="VAR",
                       help=f"variable holding the tenant's own passphrase, for tenants created with one "
                            f"(default ${TENANT_PASSPHRASE_ENV})")

    k = sub.add_parser("keygen", help="create a passphrase-protected publisher or recipient key (+ OUT.pub)")
    k.add_argument("kind", choices=["publisher", "recipient"])
    k.add_argument("--out", required=True, help="private key file; the public key goes to OUT.pub")
    k.add_argument("--force", action="store_true", help="overwrite existing files")
    pw(k)
    k.set_defaults(fn=cmd_keygen)

    pk = sub.add_parser("pubkey", help="print or save the public key of a key file or of a workspace identity")
    pk.add_argument("key", nargs="?", help="private key file (no passphrase needed)")
    pk.add_argument("--workspace", help="export the workspace identity (the default package publisher)")
    pk.add_argument("--out", help="write the public key file here instead of printing it")
    pk.set_defaults(fn=cmd_pubkey)

    v = sub.add_parser("verify", help="verify a package against pinned publisher keys (no torch)")
    v.add_argument("package")
    v.add_argument("--trust", action="append", required=True, metavar="PUB",
                   help="publisher public key file (repeatable); keys inside the package are never trusted")
    v.add_argument("--json", action="store_true", help="print the verification report as JSON")
    v.set_defaults(fn=cmd_verify)

    i = sub.add_parser("inspect", help="show manifest, DP certificate and evidence WITHOUT verifying (no torch)")
    i.add_argument("package")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_inspect)

    for name, fn, hlp in (("export", cmd_export, "verify, decrypt and write a PEFT adapter folder"),
                          ("open", cmd_open, "verify, decrypt, load on the base model and sample")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("package")
        s.add_argument("--identity", required=True, help="recipient identity file (from keygen recipient)")
        s.add_argument("--trust", action="append", required=True, metavar="PUB", help="publisher public key file")
        s.add_argument("--base-model", help="local base model folder (default: the manifest's model ref)")
        pw(s)
        if name == "export":
            s.add_argument("--out", required=True, help="output folder (must be new or empty)")
            s.add_argument("--force", action="store_true", help="write into a non-empty folder")
        else:
            s.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
            s.add_argument("--max-tokens", type=int, default=32)
            s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
            s.add_argument("--seed", type=int, default=None)
            s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        s.set_defaults(fn=fn)

    c = sub.add_parser("checkpoints", help="list the saved checkpoints (artifact ids) of a workspace")
    ws(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_checkpoints)

    pa = sub.add_parser("package", help="package a saved checkpoint (artifact id) of a workspace (no torch)")
    pa.add_argument("artifact", help="artifact id from save_state / `tinker-nb checkpoints`")
    ws(pa)
    pa.add_argument("--recipient", action="append", required=True, metavar="PUB",
                    help="recipient public key file (repeatable)")
    pa.add_argument("--out", required=True, help="package file to write, e.g. model.tgsp")
    pa.add_argument("--signer", help="publisher key file (default: the workspace identity)")
    pa.add_argument("--expires-days", type=float, default=365.0)
    pw(pa)
    pa.set_defaults(fn=cmd_package)

    a = sub.add_parser("audit", help="audit ledger commands")
    asub = a.add_subparsers(dest="audit_cmd", required=True, parser_class=_Parser, metavar="SUBCOMMAND")
    av = asub.add_parser("verify", help="verify a workspace's ledger: chain, Merkle roots, signed checkpoints "
                                        "(read-only)")
    av.add_argument("--workspace", default=os.environ.get("TINKER_NB_WORKSPACE", ".tinker_nb"))
    av.add_argument("--tenant", default="default")
    av.add_argument("--trust", metavar="PUB", help="public key that signs the checkpoints (default: the workspace's "
                                                   "identity.json)")
    av.add_argument("--trusted-checkpoint", action="append", metavar="FILE",
                    help="a signed checkpoint kept outside the workspace (from `audit checkpoint --out`; repeatable): "
                         "detects truncation or rollback of the whole file behind it")
    av.add_argument("--allow-unsigned", action="store_true",
                    help="accept a check without checkpoint signatures when no key is available (otherwise exit 1)")
    av.add_argument("--json", action="store_true")
    av.set_defaults(fn=cmd_audit_verify)
    ac = asub.add_parser("checkpoint", help="export the latest signed ledger checkpoint, to keep outside the workspace")
    ac.add_argument("--workspace", default=os.environ.get("TINKER_NB_WORKSPACE", ".tinker_nb"))
    ac.add_argument("--tenant", default="default")
    ac.add_argument("--out", metavar="FILE", help="write it here (default: print it)")
    ac.add_argument("--force", action="store_true", help="overwrite FILE")
    ac.set_defaults(fn=cmd_audit_checkpoint)

    from .server.cli_commands import add_server_commands  # `serve` and `apikey` (docs/SERVER.md)

    add_server_commands(sub, _Parser)
    return p


def _one_line(text: object) -> str:
    return cli_wording(str(text))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"tinker-nb: usage error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return EXIT_OK if not exc.code else EXIT_USAGE
    json_mode = getattr(args, "json", False)
    try:
        return args.fn(args)
    except (SignatureError, TrustError, IntegrityError, PackageError) as exc:
        if json_mode and args.cmd in ("verify", "audit"):
            _print_json({"ok": False, "error": type(exc).__name__, "entry": getattr(exc, "entry", None),
                         "message": _one_line(exc)})
        print(f"tinker-nb: verification failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_VERIFY
    except KeyAccessError as exc:
        print(f"tinker-nb: key access: {_one_line(exc)}", file=sys.stderr)
        return EXIT_KEYS
    except (ConfigError, DataError) as exc:
        print(f"tinker-nb: usage error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except TinkerError as exc:
        print(f"tinker-nb: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_OTHER
    except KeyboardInterrupt:
        print("tinker-nb: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the CLI promises one line, never a traceback
        if os.environ.get("TINKER_NB_DEBUG") == "1":
            raise
        print(f"tinker-nb: error: {type(exc).__name__}: {_one_line(exc)} (TINKER_NB_DEBUG=1 shows a traceback)",
              file=sys.stderr)
        return EXIT_OTHER


if __name__ == "__main__":
    sys.exit(main())
