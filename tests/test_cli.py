"""The `tinker-nb` command: every command, its documented exit codes, and one-line errors."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinker_nb import cli
from tinker_nb.cli import EXIT_KEYS, EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_VERIFY, main

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
