"""The `tinker-nb` command: every command, its documented exit codes, and one-line errors."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tinker_nb import cli
from tinker_nb.cli import EXIT_INTERRUPTED, EXIT_KEYS, EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_VERIFY, main

from .tgsp.helpers import BLOCK_HEAVY, flip, make_run, rewrite

VEC = Path(__file__).resolve().parent / "vectors" / "tgsp"
PKG, PUB, RKEY = str(VEC / "sample.tgsp"), str(VEC / "publisher.pub"), str(VEC / "recipient.key")
EXPECTED = json.loads((VEC / "expected.json").read_text())


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    return make_run(tiny_model, tmp_path_factory.mktemp("cli"))


@pytest.fixture
def pw(monkeypatch):
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "tgsp-test-vector")


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


# ---------------------------------------------------------------------- keys
def test_keygen_and_pubkey(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "a long passphrase")
    for kind in ("publisher", "recipient"):
        out = tmp_path / f"{kind}.key"
        assert main(["keygen", kind, "--out", str(out)]) == EXIT_OK
        info = json.loads(capsys.readouterr().out)
        pub = json.loads((tmp_path / f"{kind}.key.pub").read_text())
        assert info["key_id"] == pub["key_id"] and len(info["key_id"]) == 64
        assert "a long passphrase" not in out.read_text() and "protected" in out.read_text()
        assert main(["keygen", kind, "--out", str(out)]) == EXIT_USAGE  # exists, no --force
        _one_line_error(capsys, "--force")
        assert main(["pubkey", str(out)]) == EXIT_OK  # no passphrase needed for the public half
        assert json.loads(capsys.readouterr().out)["key_id"] == info["key_id"]
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "short")
    assert main(["keygen", "publisher", "--out", str(tmp_path / "x.key")]) == EXIT_USAGE
    _one_line_error(capsys, "at least 8 characters")
    monkeypatch.delenv("TINKER_NB_PASSPHRASE")
    assert main(["keygen", "publisher", "--out", str(tmp_path / "y.key")]) == EXIT_USAGE  # no tty, no variable
    _one_line_error(capsys, "TINKER_NB_PASSPHRASE")
    monkeypatch.setenv("MY_PW", "another long one")
    assert main(["keygen", "recipient", "--out", str(tmp_path / "z.key"), "--passphrase-env", "MY_PW"]) == EXIT_OK
    assert main(["pubkey", str(tmp_path / "missing.key")]) == EXIT_KEYS


# ---------------------------------------------------------------------- verify / inspect (the vector package)
def test_verify_and_inspect(capsys):
    assert main(["verify", PKG, "--trust", PUB]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("OK ") and "VERIFIED" in out and "ML-DSA-65 and Ed25519" in out
    assert main(["verify", PKG, "--trust", PUB, "--json"]) == EXIT_OK
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["package_id"] == EXPECTED["package_id"]
    assert main(["inspect", PKG]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("NOT VERIFIED") and "privacy" in out and "differential" in out
    assert main(["inspect", PKG, "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] is False and doc["dp_certificate.json"]["epsilon"] == EXPECTED["epsilon"]


def test_verify_failures_exit_1_with_one_line(tmp_path, capsys, run):
    assert main(["verify", PKG, "--trust", str(run["pub_file"])]) == EXIT_VERIFY
    _one_line_error(capsys, "verification failed: TrustError: manifest.sig")
    bad = rewrite(Path(PKG), tmp_path / "bad.tgsp", replace={"evidence.json": flip})
    assert main(["verify", str(bad), "--trust", PUB]) == EXIT_VERIFY
    _one_line_error(capsys, "IntegrityError: evidence.json")
    assert main(["verify", str(bad), "--trust", PUB, "--json"]) == EXIT_VERIFY
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"ok": False, "error": "IntegrityError", "entry": "evidence.json",
                                        "message": "evidence.json: SHA-256 does not match the signed manifest."}
    assert main(["verify", str(tmp_path / "missing.tgsp"), "--trust", PUB]) == EXIT_VERIFY
    _one_line_error(capsys, "no such package file")
    (tmp_path / "junk.tgsp").write_bytes(b"junk")
    assert main(["inspect", str(tmp_path / "junk.tgsp")]) == EXIT_VERIFY
    _one_line_error(capsys, "PackageError")
    assert main(["verify", PKG, "--trust", str(tmp_path / "nokey.pub")]) == EXIT_KEYS
    _one_line_error(capsys, "does not exist")


def test_cli_verify_never_imports_torch():
    code = BLOCK_HEAVY.format(blocked=("torch", "transformers", "peft", "opacus")) + textwrap.dedent(f"""
        from tinker_nb.cli import main
        rc = main(["verify", {PKG!r}, "--trust", {PUB!r}])
        rc2 = main(["inspect", {PKG!r}, "--json"])
        assert "torch" not in sys.modules
        sys.exit(rc or rc2)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


# ---------------------------------------------------------------------- export / open
def test_export_and_open(tmp_path, capsys, pw, monkeypatch):
    out_dir = tmp_path / "adapter"
    assert main(["export", PKG, "--identity", RKEY, "--trust", PUB, "--out", str(out_dir)]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["peft_adapter"] == str(out_dir)
    assert {p.name for p in out_dir.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert main(["export", PKG, "--identity", RKEY, "--trust", PUB, "--out", str(out_dir)]) == EXIT_USAGE
    _one_line_error(capsys, "not an empty folder")
    g = EXPECTED["greedy_sample"]
    assert main(["open", PKG, "--identity", RKEY, "--trust", PUB, "--prompt", g["prompt"],
                 "--max-tokens", str(g["max_tokens"])]) == EXIT_OK
    line = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert line["prompt"] == g["prompt"] and line["completion"] == g["completion"]
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "wrong passphrase")
    assert main(["export", PKG, "--identity", RKEY, "--trust", PUB, "--out", str(tmp_path / "x")]) == EXIT_KEYS
    _one_line_error(capsys, "key access", "wrong passphrase")
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "eve's passphrase")
    assert main(["keygen", "recipient", "--out", str(tmp_path / "eve.key")]) == EXIT_OK
    capsys.readouterr()
    assert main(["open", PKG, "--identity", str(tmp_path / "eve.key"), "--trust", PUB, "--prompt", "x"]) == EXIT_KEYS
    _one_line_error(capsys, "not a recipient")


# ---------------------------------------------------------------------- workspace commands
def test_checkpoints_package_and_default_publisher(run, tmp_path, capsys, monkeypatch):
    ws = str(run["dir"] / "ws")
    monkeypatch.setenv("TINKER_NB_WORKSPACE_PASSPHRASE", "pw")
    assert main(["checkpoints", "--workspace", ws, "--json"]) == EXIT_OK
    assert run["artifact_id"] in [r["artifact_id"] for r in json.loads(capsys.readouterr().out)]
    # publisher key file, passphrase-protected
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "publisher pw")
    run["publisher"].save(tmp_path / "pub.key", passphrase="publisher pw")
    run["bob"].public_key().save(tmp_path / "bob.pub")
    out = tmp_path / "ckpt.tgsp"
    assert main(["package", run["artifact_id"], "--workspace", ws, "--recipient", str(tmp_path / "bob.pub"),
                 "--signer", str(tmp_path / "pub.key"), "--out", str(out)]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["publisher"] == run["publisher"].key_id
    assert main(["verify", str(out), "--trust", str(run["pub_file"])]) == EXIT_OK
    capsys.readouterr()
    # default publisher = the workspace identity, exported with `pubkey --workspace`
    out2 = tmp_path / "ws.tgsp"
    assert main(["package", run["artifact_id"], "--workspace", ws, "--recipient", str(tmp_path / "bob.pub"),
                 "--out", str(out2), "--expires-days", "7"]) == EXIT_OK
    assert main(["pubkey", "--workspace", ws, "--out", str(tmp_path / "ws.pub")]) == EXIT_OK
    capsys.readouterr()
    assert main(["verify", str(out2), "--trust", str(tmp_path / "ws.pub"), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["evidence"]["ledger_checkpoint"]["key_pinned"] is True
    # refusals
    for argv, needle in (([run["artifact_id"], "--workspace", str(tmp_path)], "not a tinker_nb workspace"),
                         ([run["artifact_id"], "--workspace", ws, "--tenant", "other"], "no tenant"),
                         (["nope", "--workspace", ws], "no artifact")):
        assert main(["package", *argv, "--recipient", str(tmp_path / "bob.pub"), "--out",
                     str(tmp_path / "z.tgsp")]) == EXIT_USAGE
        _one_line_error(capsys, needle)
    assert not (tmp_path / "z.tgsp").exists()


def test_package_refuses_a_workspace_whose_privacy_odometer_was_deleted(run, tmp_path, capsys, monkeypatch):
    """A lost privacy.sqlite is never re-created empty: the certificate would state ε from zero (exit 1)."""
    ws = tmp_path / "ws"
    shutil.copytree(run["dir"] / "ws", ws)
    for suffix in ("", "-wal", "-shm"):
        (ws / f"privacy.sqlite{suffix}").unlink(missing_ok=True)
    monkeypatch.setenv("TINKER_NB_WORKSPACE_PASSPHRASE", "pw")
    assert main(["checkpoints", "--workspace", str(ws)]) == EXIT_OK  # what needs no odometer still works
    capsys.readouterr()
    run["bob"].public_key().save(tmp_path / "bob.pub")
    out = tmp_path / "x.tgsp"
    assert main(["package", run["artifact_id"], "--workspace", str(ws), "--recipient", str(tmp_path / "bob.pub"),
                 "--out", str(out)]) == EXIT_VERIFY
    err = _one_line_error(capsys, "IntegrityError", "privacy.sqlite is missing", "backup")
    assert "Traceback" not in err
    assert not out.exists() and not (ws / "privacy.sqlite").exists()


def test_audit_verify_via_the_console_entry(run, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(run["dir"] / "ws", ws)
    cmd = [sys.executable, "-m", "tinker_nb.cli", "audit", "verify", "--workspace", str(ws)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_OK and out.stdout.startswith("OK"), out.stderr
    db = sqlite3.connect(ws / "audit.sqlite")
    db.execute("UPDATE entries SET operation='forged' WHERE seq=1")
    db.commit()
    db.close()
    out = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_VERIFY and json.loads(out.stdout)["first_bad_seq"] == 1


# ---------------------------------------------------------------------- usage
@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["verify"], ["verify", PKG], ["keygen", "admin", "--out", "x"],
                                  ["open", PKG, "--identity", RKEY, "--trust", PUB], ["audit"]])
def test_usage_errors_are_one_line(argv, capsys):
    assert main(argv) == EXIT_USAGE
    _one_line_error(capsys, "usage error")


def test_help_and_version(capsys):
    assert main(["--version"]) == EXIT_OK
    assert "tinker-nb" in capsys.readouterr().out
    assert main(["verify", "--help"]) == EXIT_OK
    assert "--trust" in capsys.readouterr().out


def test_unexpected_errors_are_one_line(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(cli, "cmd_inspect", boom)
    assert main(["inspect", PKG]) == EXIT_OTHER
    _one_line_error(capsys, "RuntimeError: disk on fire second line")


# ---------------------------------------------------------------------- issue 13 / issue 12 item 10
def _ledger_ws(tmp_path, monkeypatch, *, n=5):
    """A torch-free workspace: passphrase keystore, tenant 'default', identity, n ledger entries + a checkpoint."""
    from tinker_nb.ledger import AuditLedger
    from tinker_nb.security.identity import workspace_signer
    from tinker_nb.security.keys import Keystore

    ws = tmp_path / "ws"
    ks = Keystore.open(ws, passphrase="ws pw")
    ks.create_tenant("default")
    led = AuditLedger(ws / "audit.sqlite", tenant="default", signer=workspace_signer(ws, ks))
    for i in range(n):
        led.append("optim_step", {"step": i}, summary={"step": i})
    led.checkpoint()
    led.close()
    monkeypatch.setenv("TINKER_NB_WORKSPACE_PASSPHRASE", "ws pw")
    return ws, ks


def _sql(path, q):
    db = sqlite3.connect(path)
    db.execute(q)
    db.commit()
    db.close()


def test_every_documented_exit_code(tmp_path, monkeypatch, capsys):
    """docs/CLI.md's table, one case (or more) per code."""
    ws, _ = _ledger_ws(tmp_path, monkeypatch)
    recipient_pub = str(VEC / "recipient.pub")
    (tmp_path / "dir").mkdir()
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "a long passphrase")
    cases = [
        (["verify", PKG, "--trust", PUB], EXIT_OK, None),
        (["audit", "verify", "--workspace", str(ws)], EXIT_OK, None),
        (["verify", str(VEC / "bad" / "trailing-bytes.tgsp"), "--trust", PUB], EXIT_VERIFY, "end of central directory"),
        (["keygen", "publisher"], EXIT_USAGE, "--out"),
        (["checkpoints", "--workspace", str(ws), "--tenant", "nobody"], EXIT_USAGE, "no tenant 'nobody'"),
        (["verify", PKG, "--trust", str(tmp_path / "dir")], EXIT_KEYS, "is a folder"),
        (["keygen", "publisher", "--out", str(tmp_path / "dir"), "--force"], EXIT_KEYS, "is a folder"),
        (["verify", PKG, "--trust", recipient_pub], EXIT_KEYS, "wrong kind of key"),
        (["audit", "verify", "--workspace", str(ws), "--trust", recipient_pub], EXIT_KEYS, "wrong kind of key"),
        (["package", "x", "--workspace", str(ws), "--recipient", PUB, "--out", str(tmp_path / "p.tgsp")],
         EXIT_KEYS, "publisher (signing) key, not a recipient key"),
    ]
    for argv, code, needle in cases:
        assert main(argv) == code, (argv, capsys.readouterr())
        if needle:
            _one_line_error(capsys, needle)
        capsys.readouterr()
    monkeypatch.delenv("TINKER_NB_WORKSPACE_PASSPHRASE")
    assert main(["checkpoints", "--workspace", str(ws)]) == EXIT_KEYS
    err = _one_line_error(capsys, "$TINKER_NB_WORKSPACE_PASSPHRASE")
    assert "passphrase=" not in err and "%tinker" not in err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_inspect", interrupted)
    assert main(["inspect", PKG]) == EXIT_INTERRUPTED
    _one_line_error(capsys, "interrupted")


def test_audit_verify_is_read_only_and_refuses_empty_tableless_and_corrupt_files(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "audit.sqlite").write_bytes(b"")
    assert main(["audit", "verify", "--workspace", str(ws), "--allow-unsigned"]) == EXIT_VERIFY
    _one_line_error(capsys, "not an audit ledger", "empty file")
    assert (ws / "audit.sqlite").read_bytes() == b""  # no tables were created in the file under verification
    sqlite3.connect(ws / "other.sqlite").execute("CREATE TABLE x (a)").connection.commit()
    shutil.copy(ws / "other.sqlite", ws / "audit.sqlite")
    assert main(["audit", "verify", "--workspace", str(ws), "--allow-unsigned"]) == EXIT_VERIFY
    _one_line_error(capsys, "not an audit ledger", "another database")
    (ws / "audit.sqlite").write_bytes(b"SQLite format 3\0" + b"\xff" * 4000)
    assert main(["audit", "verify", "--workspace", str(ws), "--allow-unsigned"]) == EXIT_VERIFY
    _one_line_error(capsys, "IntegrityError")
    ws2, _ = _ledger_ws(tmp_path / "b", monkeypatch, n=0)
    assert main(["audit", "verify", "--workspace", str(ws2), "--tenant", "default"]) == EXIT_VERIFY
    assert capsys.readouterr().out.startswith("EMPTY")


def test_audit_verify_without_any_key_needs_allow_unsigned(tmp_path, monkeypatch, capsys):
    ws, _ = _ledger_ws(tmp_path, monkeypatch)
    (ws / "identity.json").unlink()
    assert main(["audit", "verify", "--workspace", str(ws)]) == EXIT_VERIFY
    _one_line_error(capsys, "--allow-unsigned", "--trust")
    assert main(["audit", "verify", "--workspace", str(ws), "--allow-unsigned"]) == EXIT_OK
    assert "NOT checked" in capsys.readouterr().out


def test_a_trusted_checkpoint_kept_elsewhere_detects_cutting_the_tail_and_the_stored_checkpoints(
        tmp_path, monkeypatch, capsys):
    from tinker_nb.ledger import AuditLedger
    from tinker_nb.security.identity import workspace_signer

    ws, ks = _ledger_ws(tmp_path, monkeypatch)
    led = AuditLedger(ws / "audit.sqlite", tenant="default", signer=workspace_signer(ws, ks))
    led.append("package", {"package_id": "p"}, summary={"package_id": "p"})  # signs a checkpoint after it
    assert led.latest_checkpoint().size == led.size() == 6
    led.close()
    kept = tmp_path / "kept.json"
    assert main(["audit", "checkpoint", "--workspace", str(ws), "--out", str(kept)]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["size"] == 6
    assert main(["audit", "checkpoint", "--workspace", str(ws), "--out", str(kept)]) == EXIT_USAGE  # no --force
    capsys.readouterr()
    shutil.copy(ws / "identity.json", tmp_path / "identity.backup")
    assert main(["pubkey", "--workspace", str(ws), "--out", str(tmp_path / "ws.pub")]) == EXIT_OK
    # An attacker deletes the release entry AND every stored checkpoint covering it.
    _sql(ws / "audit.sqlite", "DELETE FROM entries WHERE seq=5")
    _sql(ws / "audit.sqlite", "DELETE FROM checkpoints WHERE size>5")
    assert main(["audit", "verify", "--workspace", str(ws), "--trust", str(tmp_path / "ws.pub")]) == EXIT_OK
    capsys.readouterr()  # undetectable without an outside anchor ...
    assert main(["audit", "verify", "--workspace", str(ws), "--trust", str(tmp_path / "ws.pub"),
                 "--trusted-checkpoint", str(kept)]) == EXIT_VERIFY
    assert "truncation or rollback" in capsys.readouterr().out  # ... and caught with the exported one
    kept.write_text("{}")
    assert main(["audit", "verify", "--workspace", str(ws), "--trusted-checkpoint", str(kept)]) == EXIT_VERIFY
    _one_line_error(capsys, "fields")


def test_cli_errors_speak_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "tgsp-test-vector")
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "x").write_text("x")
    assert main(["export", PKG, "--identity", RKEY, "--trust", PUB, "--out", str(d)]) == EXIT_USAGE
    err = _one_line_error(capsys, "--force")
    assert "overwrite=True" not in err
    assert main(["export", PKG, "--identity", str(VEC / "recipient.pub"), "--trust", PUB, "--out",
                 str(tmp_path / "o")]) == EXIT_KEYS
    _one_line_error(capsys, "PUBLIC key, not a recipient identity")
    assert cli.cli_wording("see list_checkpoints(); pass passphrase=... (Python: f(a=1); CLI: --flag)") == \
        "see `tinker-nb checkpoints`; set $TINKER_NB_WORKSPACE_PASSPHRASE (--flag)"


def test_open_is_quiet_and_a_long_prompt_is_a_usage_error(tmp_path, monkeypatch, capsys, pw):
    g = EXPECTED["greedy_sample"]
    assert main(["open", PKG, "--identity", RKEY, "--trust", PUB, "--prompt", g["prompt"],
                 "--max-tokens", str(g["max_tokens"])]) == EXIT_OK
    captured = capsys.readouterr()
    assert json.loads(captured.out)["completion"] == g["completion"]
    assert captured.err == "", captured.err  # no progress bars, no FutureWarning
    assert main(["open", PKG, "--identity", RKEY, "--trust", PUB, "--prompt", "word " * 3000]) == EXIT_USAGE
    _one_line_error(capsys, "usage error", "--max-tokens", "max_position_embeddings")


def test_exported_adapter_config_names_the_signed_model_ref_not_a_local_path(tmp_path, pw, capsys):
    out = tmp_path / "adapter"
    assert main(["export", PKG, "--identity", RKEY, "--trust", PUB, "--out", str(out)]) == EXIT_OK
    cfg = json.loads((out / "adapter_config.json").read_text())
    manifest = json.loads(zipfile.ZipFile(PKG).read("manifest.json"))
    assert cfg["base_model_name_or_path"] == manifest["base_model"]["ref"]
    assert not Path(cfg["base_model_name_or_path"]).is_absolute()
    assert "site-packages" not in (out / "adapter_config.json").read_text()


def test_cli_opens_a_tenant_with_its_own_secret_and_refuses_shredded_ones(tmp_path, monkeypatch, capsys):
    from tinker_nb.security.keys import Keystore
    from tinker_nb.storage import ArtifactStore

    ws = tmp_path / "ws"
    ks = Keystore.open(ws, passphrase="ws pw")
    ks.create_tenant("alice", secret="alice secret words")
    aid = ArtifactStore(ws, ks, tenant="alice").save("a", {"w": b"1"}, public={"step": 3}).artifact_id
    ks.create_tenant("gone")
    ks.destroy_tenant("gone")
    monkeypatch.setenv("TINKER_NB_WORKSPACE_PASSPHRASE", "ws pw")
    argv = ["checkpoints", "--workspace", str(ws), "--tenant", "alice", "--json"]
    assert main(argv) == EXIT_KEYS
    _one_line_error(capsys, "$TINKER_NB_TENANT_PASSPHRASE")
    monkeypatch.setenv("TINKER_NB_TENANT_PASSPHRASE", "wrong secret words")
    assert main(argv) == EXIT_KEYS
    _one_line_error(capsys, "wrong secret")
    monkeypatch.setenv("TINKER_NB_TENANT_PASSPHRASE", "alice secret words")
    assert main(argv) == EXIT_OK
    assert [r["artifact_id"] for r in json.loads(capsys.readouterr().out)] == [aid]
    assert main(["checkpoints", "--workspace", str(ws), "--tenant", "gone"]) == EXIT_KEYS
    _one_line_error(capsys, "crypto-shredded")
    # an edited index row is refused by `checkpoints` (authenticated listing)
    _sql(ws / "artifacts.sqlite", "UPDATE artifacts SET name='FINAL-approved'")
    assert main(argv) == EXIT_VERIFY
    _one_line_error(capsys, "IntegrityError", "'name'")
    # a malformed keystore.json is refused, not rebuilt
    (ws / "keystore.json").write_text("{}")
    assert main(argv) == EXIT_VERIFY
    _one_line_error(capsys, "keystore.json is malformed")
    assert (ws / "keystore.json").read_text() == "{}"
