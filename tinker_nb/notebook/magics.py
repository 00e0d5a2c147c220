"""``%tinker`` line magics: status, dashboard, budget, save, load, checkpoints, audit, keys, package, verify.

``%load_ext tinker_nb`` registers them. Every subcommand acts on the most recently created training
client, or on ``--client VAR`` from the user namespace. Bad input raises ``UsageError`` with the usage.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

__all__ = ["TinkerMagics", "load_ipython_extension"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # never sys.exit inside a kernel
        raise UsageError(f"{message}\n\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _HelpShown(message or "")


class _HelpShown(Exception):
    pass


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` (a ``#`` that starts a word outside quotes), as in a shell."""
    quote, i = None, 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quote != "'":
            i += 2  # an escaped character (shlex's POSIX rules)
            continue
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
        i += 1
    return line


def _parser() -> _Parser:
    p = _Parser(prog="%tinker", description="tinker_nb: DP fine-tuning from the notebook.")
    p.add_argument("--client", help="name of a TrainingClient variable (default: the last one created)")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    sub.add_parser("status", help="privacy spent, steps, last loss")
    sub.add_parser("dashboard", help="show the live dashboard")
    b = sub.add_parser("budget", help="open the budget planner")
    b.add_argument("--dataset-size", type=int, default=10_000, help="N, records in the private data set")
    b.add_argument("--batch-size", type=int, default=64, help="expected Poisson batch size")
    b.add_argument("--epochs", type=float, default=3.0)
    b.add_argument("--delta", type=float, default=1e-5)
    g = b.add_mutually_exclusive_group()
    g.add_argument("--noise-multiplier", type=float, default=None, help="fix σ and get ε")
    g.add_argument("--target-epsilon", type=float, default=None, help="fix ε and get σ")
    s = sub.add_parser("save", help="save an encrypted checkpoint")
    s.add_argument("name", nargs="?", default=None, help="checkpoint name (default: step-N)")
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
    pa = sub.add_parser("audit-privacy", help="canary audit: an empirical ε lower bound beside the reported ε")
    pa.add_argument("--canaries", type=int, default=256, help="number of canaries (each in with --inclusion-prob)")
    pa.add_argument("--steps", type=int, default=None, help="training steps (default: the config's epochs)")
    pa.add_argument("--epochs", type=float, default=None)
    pa.add_argument("--confidence", type=float, default=0.95)
    pa.add_argument("--inclusion-prob", type=float, default=0.5)
    pa.add_argument("--kind", choices=["random", "template"], default="random")
    pa.add_argument("--dataset-size", type=int, default=None,
                    help="size of the synthetic stand-in (default: the client's data set size)")
    pa.add_argument("--real-data", metavar="VAR", default=None,
                    help="audit on this notebook variable's records instead (charged to their budget)")
    return p


@magics_class
class TinkerMagics(Magics):
    @line_magic
    def tinker(self, line: str) -> Any:
        """%tinker status|dashboard|budget|save [NAME]|load ID|checkpoints|audit|keys|package|verify (-h for help)"""
        parser = _parser()
        try:
            args = parser.parse_args(shlex.split(_strip_comment(line)))
        except _HelpShown as h:  # argparse already printed the help of the (sub)command asked for
            if str(h):
                print(str(h))
            return None
        except ValueError as exc:  # shlex: unbalanced quotes
            raise UsageError(f"{exc}\n\n{parser.format_usage()}") from None
        if args.cmd is None:
            print(parser.format_help())
            return None
        if args.cmd == "budget":
            import math

            from .planner import BudgetPlanner

            if not 0 < args.delta < 1:
                raise UsageError("--delta must be in (0, 1), e.g. --delta 1e-5")
            kw = dict(dataset_size=args.dataset_size, batch_size=args.batch_size, epochs=args.epochs,
                      log10_delta=math.log10(args.delta))
            if args.target_epsilon is not None:
                kw.update(mode="target", target_epsilon=args.target_epsilon)
            elif args.noise_multiplier is not None:
                kw.update(mode="noise", noise_multiplier=args.noise_multiplier)
            return BudgetPlanner(**kw)
        if args.cmd == "verify":
            return self._verify(args)
        if args.cmd == "audit-privacy":
            return self._audit_privacy(args)
        tc = self._client(args.client)
        from ..errors import TinkerError

        try:
            return getattr(self, f"_cmd_{args.cmd}")(tc, args)
        except TinkerError as exc:
            raise UsageError(f"{type(exc).__name__}: {exc}") from None

    def _client(self, name: str | None):
        from ..client import ServiceClient, TrainingClient

        assert self.shell is not None  # a magic always runs in a shell
        if name:
            tc = self.shell.user_ns.get(name)
            if not isinstance(tc, TrainingClient):
                raise UsageError(f"--client {name!r} is not a TrainingClient in this notebook.")
            return tc
        # The most recently created open training client the notebook can reach: a TrainingClient
        # variable, or one created by a ServiceClient variable (no kernel-global registry).
        found: dict[int, TrainingClient] = {}
        for v in list(self.shell.user_ns.values()):
            if isinstance(v, TrainingClient) and not v.closed:
                found[id(v)] = v
            elif isinstance(v, ServiceClient) and hasattr(v, "training_clients"):
                try:
                    for c in v.training_clients():
                        found[id(c)] = c
                except Exception:  # noqa: BLE001 - a half-built service must not break the magic
                    pass
        if not found:
            raise UsageError("no open training client in this notebook: create one with "
                             "tc = ServiceClient().create_training_client(...), or pass --client VAR.")
        return max(found.values(), key=lambda c: getattr(c, "created_at", 0.0))

    def _cmd_status(self, tc, args) -> dict:
        from ..types import Status

        m = Status(tc.get_dp_metrics().to_dict())  # a dict with a readable repr (no 16-digit floats)
        hist = tc.metrics_history()
        m["last_loss"] = hist[-1]["loss"] if hist else None
        eps = "∞ (no DP)" if not m["dp_enabled"] else f"{m['epsilon_spent']:.3f} / {m['target_epsilon']}"
        try:
            m["checkpoints"] = len(tc.list_checkpoints())
        except Exception:  # noqa: BLE001 - a busy store must not break status
            m["checkpoints"] = None
        loss = f" · last loss {m['last_loss']:.3f} (not private)" if m["last_loss"] is not None else ""
        print(f"steps {m['steps']} · ε {eps} · δ {m['delta']} · {m['accountant']} · sampling {m['sampling']}"
              f" · checkpoints {m['checkpoints']}{loss}")
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
        if args.tail < 1:
            raise UsageError(f"--tail must be at least 1, got {args.tail}.")
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
                try:
                    pk.save(args.out)
                except OSError as exc:
                    raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}.") from None
                print(f"publisher public key {pk.key_id[:16]}… written to {args.out}")
            return pk
        return tc.service.keystore.key_info(tc.service.tenant)

    def _cmd_package(self, tc, args):
        try:
            from ..security.kem import load_recipient
        except ImportError as exc:  # pragma: no cover
            raise UsageError(f"packaging is unavailable: {exc}") from None
        return tc.package(args.out, recipients=[load_recipient(r) for r in args.recipient])

    def _audit_privacy(self, args):
        from ..errors import TinkerError
        from ..privacy_audit import audit_privacy

        tc = self._client(args.client)
        kw: dict[str, Any] = dict(n_canaries=args.canaries, steps=args.steps, epochs=args.epochs,
                                  confidence=args.confidence, inclusion_prob=args.inclusion_prob,
                                  canary_kind=args.kind)
        try:
            if args.real_data:
                ns = self.shell.user_ns if self.shell is not None else {}
                if args.real_data not in ns:
                    raise UsageError(f"--real-data {args.real_data!r} is not a variable in this notebook.")
                kw.update(data=ns[args.real_data], on_real_data=True, service=tc.service)
            else:
                size = args.dataset_size or tc.get_dp_metrics().dataset_size
                if not size:
                    raise UsageError("attach a data set to the client first, or pass --dataset-size N.")
                kw.update(dataset_size=int(size))
            return audit_privacy(tc.config, **kw)
        except TinkerError as exc:
            raise UsageError(f"{type(exc).__name__}: {exc}") from None

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
