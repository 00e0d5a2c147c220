"""The `tinker-nb` command: keygen, verify, inspect, export, open, audit verify, and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from tinker_nb.cli import EXIT_KEYS, EXIT_OK, EXIT_USAGE, EXIT_VERIFY, main

from .test_tgsp import RECORDS, built  # noqa: F401  (module fixture)


@pytest.fixture
def keys(built, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "cli-pass")
    pub = tmp_path / "publisher.pub"
    built["publisher"].public_key().save(pub)
    ident = tmp_path / "alice.key"
    built["alice"].save(ident, passphrase="cli-pass")
    return {"pub": str(pub), "alice": str(ident)}


def test_keygen(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "pw")
    for kind in ("publisher", "recipient"):
        out = tmp_path / f"{kind}.key"
        assert main(["keygen", kind, "--out", str(out)]) == EXIT_OK
        info = json.loads(capsys.readouterr().out)
        assert (tmp_path / f"{kind}.key.pub").exists() and len(info["key_id"]) == 64
        assert "cli" not in out.read_text() and "protected" in out.read_text()
        assert main(["keygen", kind, "--out", str(out)]) == EXIT_USAGE  # exists, no --force


def test_verify_inspect_export_open(built, keys, tmp_path, capsys):  # noqa: F811
    pkg = str(built["pkg"])
    assert main(["verify", pkg, "--trust", keys["pub"]]) == EXIT_OK
    assert "OK" in capsys.readouterr().out
    assert main(["verify", pkg, "--trust", keys["pub"], "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["inspect", pkg, "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["dp_certificate.json"]["dp"] is True
    assert main(["inspect", pkg]) == EXIT_OK and "privacy" in capsys.readouterr().out
    assert main(["export", pkg, "--identity", keys["alice"], "--trust", keys["pub"], "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "adapter_config.json").exists()
    capsys.readouterr()
    assert main(["open", pkg, "--identity", keys["alice"], "--trust", keys["pub"], "--prompt", "the cat",
                 "--max-tokens", "8"]) == EXIT_OK
    line = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert line["prompt"] == "the cat"


def test_failure_exit_codes_are_one_line(built, keys, tmp_path, capsys, monkeypatch):  # noqa: F811
    other = tmp_path / "other.pub"
    from tinker_nb.security.signing import HybridSigner

    HybridSigner.generate().public_key().save(other)
    assert main(["verify", str(built["pkg"]), "--trust", str(other)]) == EXIT_VERIFY
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TrustError" in err and "Traceback" not in err
    bad = tmp_path / "bad.tgsp"
    with zipfile.ZipFile(built["pkg"]) as z, zipfile.ZipFile(bad, "w") as o:
        for i in z.infolist():
            d = z.read(i)
            o.writestr(i.filename, d[:-1] + bytes([d[-1] ^ 1]) if i.filename == "evidence.json" else d)
    assert main(["verify", str(bad), "--trust", keys["pub"]]) == EXIT_VERIFY
    assert "evidence.json" in capsys.readouterr().err
    monkeypatch.setenv("TINKER_NB_PASSPHRASE", "wrong")
    assert main(["export", str(built["pkg"]), "--identity", keys["alice"], "--trust", keys["pub"],
                 "--out", str(tmp_path / "x")]) == EXIT_KEYS
    assert main(["verify"]) == EXIT_USAGE
    assert main(["frobnicate"]) == EXIT_USAGE
    assert main(["verify", str(tmp_path / "missing.tgsp"), "--trust", keys["pub"]]) == EXIT_VERIFY


def test_audit_verify_and_console_entry(built, tmp_path):  # noqa: F811
    ws = built["dir"] / "ws"
    out = subprocess.run([sys.executable, "-m", "tinker_nb.cli", "audit", "verify", "--workspace", str(ws)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_OK and out.stdout.startswith("OK"), out.stderr
    import sqlite3

    db = sqlite3.connect(ws / "audit.sqlite")
    db.execute("UPDATE entries SET operation='forged' WHERE seq=1")
    db.commit()
    db.close()
    out = subprocess.run([sys.executable, "-m", "tinker_nb.cli", "audit", "verify", "--workspace", str(ws)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_VERIFY and "BROKEN at entry 1" in out.stdout
