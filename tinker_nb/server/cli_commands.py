"""`tinker-nb serve` and `tinker-nb apikey create|list|revoke` (registered by tinker_nb/cli.py).

Importing this module is cheap: FastAPI and uvicorn are imported only when ``serve`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_server_commands", "cmd_apikey", "cmd_serve"]

WORKSPACE_PASSPHRASE_ENV = "TINKER_NB_WORKSPACE_PASSPHRASE"


def _ws_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--workspace", default=os.environ.get("TINKER_NB_WORKSPACE", ".tinker_nb"),
                   help="workspace folder (default $TINKER_NB_WORKSPACE or .tinker_nb)")
    s.add_argument("--key-file", help="root key file of the workspace (if it was created with one)")
    s.add_argument("--workspace-passphrase-env", metavar="VAR",
                   help=f"variable holding the workspace passphrase (default ${WORKSPACE_PASSPHRASE_ENV})")


def _passphrase(args: argparse.Namespace) -> str | None:
    var = getattr(args, "workspace_passphrase_env", None) or WORKSPACE_PASSPHRASE_ENV
    return os.environ.get(var) or None


def add_server_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``apikey`` to the ``tinker-nb`` subcommands."""
    s = sub.add_parser("serve", help="run the Training API server (FastAPI + uvicorn) over a workspace")
    _ws_args(s)
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-clients", type=int, default=16,
                   help="open training clients at once; more answer 429 with Retry-After (default 16)")
    s.add_argument("--allow-model", action="append", default=None, metavar="REF",
                   help="model ref tenants may load (repeatable; default: the embedded tinker-nb/tiny-llama; "
                        "'*' allows any local path or cached hub id)")
    s.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (413 above; default 64)")
    s.add_argument("--idle-timeout", type=float, default=3600.0,
                   help="close training clients idle this many seconds when capacity is needed (default 3600)")
    s.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(fn=cmd_serve)

    a = sub.add_parser("apikey", help="API keys of the Training API server (create, list, revoke)")
    asub = a.add_subparsers(dest="apikey_cmd", required=True, parser_class=parser_class, metavar="SUBCOMMAND")
    c = asub.add_parser("create", help="create a key for a tenant and print it ONCE (it is stored only hashed)")
    _ws_args(c)
    c.add_argument("--tenant", required=True)
    c.add_argument("--label", default="", help="a note for `apikey list` (not secret)")
    c.add_argument("--json", action="store_true", help='print {"api_key", "tenant", "key_id"}')
    c.set_defaults(fn=cmd_apikey)
    ls = asub.add_parser("list", help="list key ids, tenants and revocation times (never the keys)")
    _ws_args(ls)
    ls.add_argument("--tenant", default=None, help="only this tenant's keys")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_apikey)
    rv = asub.add_parser("revoke", help="revoke a key by its key id (requests with it answer 401 at once)")
    rv.add_argument("key_id")
    _ws_args(rv)
    rv.add_argument("--json", action="store_true")
    rv.set_defaults(fn=cmd_apikey)


def _store(args: argparse.Namespace, *, create: bool):
    from ..errors import ConfigError
    from ..security.keys import Keystore
    from .apikeys import ApiKeyStore

    ws = Path(args.workspace)
    if not create and not (ws / "keystore.json").is_file():
        raise ConfigError(f"{ws} is not a tinker_nb workspace (no keystore.json).")
    ks = Keystore.open(ws, passphrase=_passphrase(args), key_file=args.key_file)
    return ApiKeyStore.for_keystore(ws, ks)


def cmd_apikey(args: argparse.Namespace) -> int:
    store = _store(args, create=args.apikey_cmd == "create")
    try:
        if args.apikey_cmd == "create":
            key, info = store.create(args.tenant, label=args.label)
            if args.json:
                print(json.dumps({"api_key": key, "tenant": info.tenant, "key_id": info.key_id}))
            else:
                print(key)
                print(f"key id {info.key_id} for tenant {info.tenant!r}: shown once, store it now "
                      "(the server keeps only a keyed hash).", file=sys.stderr)
        elif args.apikey_cmd == "list":
            keys = store.list(tenant=args.tenant)
            if args.json:
                print(json.dumps([k.to_dict() for k in keys], indent=1))
            else:
                import time

                for k in keys:
                    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.revoked)) if k.revoked else ""
                    state = f"revoked {when} UTC" if k.revoked else "active"
                    print(f"{k.key_id}  {k.tenant:<20} {state:<24} {k.label}")
                if not keys:
                    print("no API keys (create one with `tinker-nb apikey create --tenant NAME`).")
        else:
            info = store.revoke(args.key_id)
            if args.json:
                print(json.dumps(info.to_dict()))
            else:
                print(f"revoked {info.key_id} (tenant {info.tenant!r}).")
    finally:
        store.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    try:
        import uvicorn
    except ImportError:
        raise ConfigError("the server needs its extra: pip install 'tinker-nb[server]'.") from None
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}.")
    from .app import create_app

    app = create_app(args.workspace, max_clients=args.max_clients, allow_models=args.allow_model,
                     passphrase=_passphrase(args), key_file=args.key_file, max_body_mb=args.max_body_mb,
                     idle_timeout_s=args.idle_timeout)
    print(f"tinker-nb serve: workspace {Path(args.workspace).resolve()} on http://{args.host}:{args.port} "
          f"(max {args.max_clients} training clients)", file=sys.stderr, flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("tinker-nb serve: listening beyond this machine without TLS: API keys are bearer tokens, put a "
              "TLS-terminating proxy in front (docs/SERVER.md).", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1, access_log=False)
    return 0
