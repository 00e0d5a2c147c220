"""``%tinker`` line magics: status, dashboard, budget, save, load, checkpoints, audit, keys, package, verify.

``%load_ext tinker_nb`` registers them. Every subcommand acts on the most recently created training
client, or on ``--client VAR`` from the user namespace. Bad input raises ``UsageError`` with the usage.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

__all__ = ["TinkerMagics", "load_ipython_extension"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # never sys.exit inside a kernel
        raise UsageError(f"{message}\n\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> None:
        raise _HelpShown(message or "")


class _HelpShown(Exception):
    pass


def _parser() -> _Parser:
    p = _Parser(prog="%tinker", description="tinker_nb: DP fine-tuning from the notebook.")
    p.add_argument("--client", help="name of a TrainingClient variable (default: the last one created)")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    sub.add_parser("status", help="privacy spent, steps, last loss")
    sub.add_parser("dashboard", help="show the live dashboard")
    b = sub.add_parser("budget", help="open the budget planner")
    b.add_argument("--dataset-size", type=int, default=10_000)
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--epochs", type=float, default=3.0)
    s = sub.add_parser("save", help="save an encrypted checkpoint")
    s.add_argument("name")
    s.add_argument("--metadata", default=None, help="JSON object stored with the checkpoint")
    s.add_argument("--no-optimizer", action="store_true")
    ld = sub.add_parser("load", help="load a checkpoint by artifact id")
    ld.add_argument("artifact_id")
    sub.add_parser("checkpoints", help="list checkpoints")
    a = sub.add_parser("audit", help="show (and verify) the audit ledger")
    a.add_argument("--verify", action="store_true")
    a.add_argument("--tail", type=int, default=10)
    k = sub.add_parser("keys", help="key information and rotation")
    k.add_argument("action", choices=["info", "rotate", "pubkey"],
                   help="info: tenant KEK versions; rotate: new primary KEK; pubkey: the workspace publisher key")
    k.add_argument("--out", help="with pubkey: also write the public key file here (for --trust)")
    pk = sub.add_parser("package", help="build a signed TGSP package")
    pk.add_argument("out")
    pk.add_argument("--recipient", action="append", required=True, help="recipient public key file")
    v = sub.add_parser("verify", help="verify a TGSP package")
    v.add_argument("path")
    v.add_argument("--trust", action="append", required=True, help="pinned publisher public key file")
    return p


@magics_class
class TinkerMagics(Magics):
    @line_magic
    def tinker(self, line: str) -> Any:
        """%tinker status|dashboard|budget|save NAME|load ID|checkpoints|audit|keys|package|verify (-h for help)"""
        parser = _parser()
        try:
            args = parser.parse_args(shlex.split(line))
        except _HelpShown as h:
            print(str(h) or parser.format_help())
            return None
        except ValueError as exc:  # shlex: unbalanced quotes
            raise UsageError(f"{exc}\n\n{parser.format_usage()}") from None
        if args.cmd is None:
            print(parser.format_help())
            return None
        if args.cmd == "budget":
            from .planner import BudgetPlanner

            return BudgetPlanner(dataset_size=args.dataset_size, batch_size=args.batch_size, epochs=args.epochs)
        if args.cmd == "verify":
            return self._verify(args)
        tc = self._client(args.client)
        from ..errors import TinkerError

        try:
            return getattr(self, f"_cmd_{args.cmd}")(tc, args)
        except TinkerError as exc:
            raise UsageError(f"{type(exc).__name__}: {exc}") from None

    def _client(self, name: str | None):
        from ..client import TrainingClient, current_training_client

        if name:
            tc = self.shell.user_ns.get(name)
            if not isinstance(tc, TrainingClient):
                raise UsageError(f"--client {name!r} is not a TrainingClient in this notebook.")
            return tc
        tc = current_training_client()
        if tc is None:
            raise UsageError("no open training client: create one with ServiceClient().create_training_client(...).")
        return tc

    def _cmd_status(self, tc, args) -> dict:
        m = tc.get_dp_metrics().to_dict()
        hist = tc.metrics_history()
        m["last_loss"] = hist[-1]["loss"] if hist else None
        eps = "∞ (no DP)" if not m["dp_enabled"] else f"{m['epsilon_spent']:.3f} / {m['target_epsilon']}"
        print(f"steps {m['steps']} · ε {eps} · δ {m['delta']} · {m['accountant']} · sampling {m['sampling']}")
        return m

    def _cmd_dashboard(self, tc, args):
        return tc.dashboard()

    def _cmd_save(self, tc, args):
        meta = None
        if args.metadata:
            try:
                meta = json.loads(args.metadata)
            except ValueError:
                raise UsageError("--metadata must be a JSON object, e.g. --metadata '{\"note\": \"x\"}'") from None
            if not isinstance(meta, dict):
                raise UsageError("--metadata must be a JSON object.")
        return tc.save_state(args.name, include_optimizer=not args.no_optimizer, metadata=meta)

    def _cmd_load(self, tc, args):
        return tc.load_state(args.artifact_id)

    def _cmd_checkpoints(self, tc, args):
        from .views import checkpoints_frame

        return checkpoints_frame(tc)

    def _cmd_audit(self, tc, args):
        led = tc.audit_log()
        if args.verify:
            rep = led.verify()
            print(f"ledger: {rep.entries_checked} entries, {rep.checkpoints_checked} signed checkpoints, "
                  f"{'intact' if rep.ok else 'BROKEN at entry ' + str(rep.first_bad_seq) + ': ' + str(rep.reason)}")
        return led.to_pandas().tail(args.tail)

    def _cmd_keys(self, tc, args):
        if args.action == "rotate":
            return tc.service.rotate_keys()
        if args.action == "pubkey":
            pk = tc.service.publisher_key()
            if args.out:
                pk.save(args.out)
                print(f"publisher public key {pk.key_id[:16]}… written to {args.out}")
            return pk
        return tc.service.keystore.key_info(tc.service.tenant)

    def _cmd_package(self, tc, args):
        try:
            from ..security.kem import load_recipient
        except ImportError as exc:  # pragma: no cover
            raise UsageError(f"packaging is unavailable: {exc}") from None
        return tc.package(args.out, recipients=[load_recipient(r) for r in args.recipient])

    def _verify(self, args):
        try:
            from ..tgsp import verify_package
        except ImportError:
            raise UsageError("TGSP verification is not available in this version of tinker_nb.") from None
        from ..errors import TinkerError
        from ..security.signing import load_public_key

        try:
            return verify_package(args.path, trust=[load_public_key(t) for t in args.trust])
        except TinkerError as exc:
            raise UsageError(f"{type(exc).__name__}: {exc}") from None


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(TinkerMagics)
