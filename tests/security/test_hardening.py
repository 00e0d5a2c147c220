"""Issue 13: keystore file safety, save/retire exclusion, tenant secrets, authenticated index, crash recovery."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from tinker_nb import storage
from tinker_nb.errors import ConfigError, IntegrityError, KeyAccessError
from tinker_nb.ledger import AuditLedger
from tinker_nb.security.identity import read_workspace_identity, workspace_signer
from tinker_nb.security.keys import Keystore, keystore_info
from tinker_nb.storage import ArtifactStore


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


def _store(ws, tenant="acme", **kw):
    ks = Keystore.open(ws, **kw)
    if tenant not in ks.tenants():
        ks.create_tenant(tenant)
    return ArtifactStore(ws, ks, tenant=tenant)


# ---------------------------------------------------------------------- item 1: save vs retire
def test_retire_during_a_save_cannot_destroy_the_new_checkpoint(ws, monkeypatch):
    st = _store(ws, passphrase="pw")
    other = ArtifactStore(ws, Keystore.open(ws, passphrase="pw"), tenant="acme")  # "process B"
    real = storage.encrypt_stream

    def slow_save(*a, **k):  # B rotates and retires version 1 while A is still writing its file
        n = real(*a, **k)
        other.rotate()
        other.retire(1)
        return n

    monkeypatch.setattr(storage, "encrypt_stream", slow_save)
    info = st.save("big", {"w": b"x" * 5000})
    monkeypatch.undo()
    assert st.keystore.key_info("acme")["versions"][1]["status"] == "destroyed"
    assert st.load(info.artifact_id)[0]["w"] == b"x" * 5000  # wrapped under version 2 at commit
    assert info.encryption["key_version"] == 2


def test_retire_waits_for_the_index_row_under_the_lock(ws):
    st = _store(ws, passphrase="pw")
    a = st.save("a", {"w": b"1"})
    st.keystore.rotate("acme")  # new primary, 'a' still under version 1 (no rewrap)
    with pytest.raises(ConfigError, match="still wrapped"):
        st.retire(1)
    assert st.load(a.artifact_id)[0]["w"] == b"1"


# ---------------------------------------------------------------------- item 2: keystore.json
def _ks_bytes(ws):
    return (ws / "keystore.json").read_bytes()


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.pop("check"), "'check' is missing"),
    (lambda d: d.pop("tenants"), "'tenants' is missing"),
    (lambda d: d["tenants"]["acme"].update(primary=7), "primary"),
    (lambda d: d["tenants"]["acme"]["versions"]["1"].update(sealed="!!"), "base64"),
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d["kdf"]["params"].update(memory_cost=8, iterations=1), "below the OWASP minimum"),
    (lambda d: d["kdf"]["params"].update(memory_cost=1 << 26), "exceed the maximum"),
    (lambda d: d["kdf"]["params"].update(iterations=10**9), "exceed the maximum"),
    (lambda d: d["kdf"]["params"].update(lanes=0), "exceed the maximum"),
    (lambda d: d["kdf"]["params"].pop("length"), "exactly"),
    (lambda d: d["kdf"].update(salt="AAAA"), "too short"),
])
def test_a_malformed_or_downgraded_keystore_is_refused_and_left_unchanged(ws, edit, match):
    st = _store(ws, passphrase="pw")
    st.save("keep", {"w": b"k"})
    d = json.loads(_ks_bytes(ws))
    edit(d)
    (ws / "keystore.json").write_text(json.dumps(d))
    before = _ks_bytes(ws)
    with pytest.raises(IntegrityError, match=match) as exc:
        Keystore.open(ws, passphrase="pw")
    assert "keystore.json" in str(exc.value) and "pw" not in str(exc.value)
    assert _ks_bytes(ws) == before  # never rebuilt: no key is lost
    with pytest.raises(IntegrityError):
        keystore_info(ws)


def test_not_json_keystore_is_refused_and_the_verified_backup_restores_everything(ws):
    st = _store(ws, passphrase="pw")
    info = st.save("keep", {"w": b"k"})
    bak = ws / "keystore.json.bak"
    assert bak.read_bytes() == _ks_bytes(ws)  # written and re-read with every change
    (ws / "keystore.json").write_bytes(b"{ truncated")
    with pytest.raises(IntegrityError, match=r"keystore.json.bak"):
        Keystore.open(ws, passphrase="pw")
    assert _ks_bytes(ws) == b"{ truncated"
    (ws / "keystore.json").write_bytes(bak.read_bytes())
    assert _store(ws, passphrase="pw").load(info.artifact_id)[0]["w"] == b"k"


def test_new_workspaces_always_get_the_owasp_parameters(ws):
    Keystore.open(ws, passphrase="pw")
    assert json.loads(_ks_bytes(ws))["kdf"]["params"] == {"memory_cost": 19456, "iterations": 2, "lanes": 1,
                                                          "length": 32}


def test_a_downgraded_key_file_is_refused_before_deriving(tmp_path):
    from tinker_nb.security.kem import RecipientIdentity, load_identity

    p = tmp_path / "r.key"
    RecipientIdentity.generate().save(p, passphrase="long enough pw")
    d = json.loads(p.read_text())
    d["protected"]["params"]["memory_cost"] = 8
    with pytest.raises(IntegrityError, match="OWASP"):
        load_identity(d, passphrase="long enough pw")


def test_keystore_info_and_identity_readers(ws):
    st = _store(ws, passphrase="pw")
    st.keystore.create_tenant("bob")
    st.keystore.destroy_tenant("bob")
    info = keystore_info(ws)
    assert info.passphrase_protected and info.tenants == ("acme",) and info.shredded == ("bob",)
    signer = workspace_signer(ws, st.keystore)
    assert read_workspace_identity(ws) == signer.public_key()
    d = json.loads((ws / "identity.json").read_text())
    d["key_id"] = "0" * 64
    (ws / "identity.json").write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="key_id"):
        read_workspace_identity(ws)
    with pytest.raises(ConfigError, match="not a tinker_nb workspace"):
        keystore_info(ws / "nope")


# ---------------------------------------------------------------------- item 3: tenants
def test_a_shredded_tenant_is_not_silently_recreated(ws):
    st = _store(ws, passphrase="pw")
    old = st.save("old", {"w": b"o"})
    st.keystore.destroy_tenant("acme")
    with pytest.raises(KeyAccessError, match="recreate=True"):
        st.keystore.create_tenant("acme")
    assert "acme" not in st.keystore.tenants() and st.keystore.shredded() == ["acme"]
    st.keystore.create_tenant("acme", recreate=True)  # explicit: a new, empty tenant
    with pytest.raises(KeyAccessError):
        st.load(old.artifact_id)  # nothing of the shredded tenant comes back


def test_a_tenant_secret_isolates_tenants_that_share_the_workspace_root(ws):
    ks = Keystore.open(ws, passphrase="workspace pw")
    ks.create_tenant("alice", secret="alice's own passphrase")
    ks.create_tenant("bob", secret=b"\x07" * 32)
    a = ArtifactStore(ws, ks, tenant="alice").save("a", {"w": b"alice data"})
    # Whoever holds the workspace root (e.g. bob, or the operator) opens nothing of alice's.
    ks2 = Keystore.open(ws, passphrase="workspace pw")
    st2 = ArtifactStore(ws, ks2, tenant="alice")
    with pytest.raises(KeyAccessError, match="own secret"):
        st2.load(a.artifact_id)
    with pytest.raises(KeyAccessError, match="wrong secret"):
        ks2.unlock_tenant("alice", "not alice's passphrase")
    with pytest.raises(KeyAccessError):
        ks2.unlock_tenant("alice", b"\x07" * 32)  # bob's secret opens nothing of alice's
    ks2.unlock_tenant("bob", b"\x07" * 32)
    with pytest.raises(KeyAccessError):
        st2.load(a.artifact_id)
    ks2.unlock_tenant("alice", "alice's own passphrase")
    assert st2.load(a.artifact_id)[0]["w"] == b"alice data"
    assert ks2.key_info("alice")["own_secret"] and keystore_info(ws).tenant_secrets == ("alice", "bob")
    ks_text = _ks_bytes(ws)
    assert b"alice's own passphrase" not in ks_text
    # a tenant with a secret still rotates and rewraps, and refuses before it is unlocked
    assert ArtifactStore(ws, ks2, tenant="alice").rotate()["rewrapped"] == 1
    with pytest.raises(KeyAccessError, match="own secret"):
        Keystore.open(ws, passphrase="workspace pw").rotate("alice")


def test_tenant_names_and_secrets_are_checked(ws):
    ks = Keystore.open(ws, passphrase="pw")
    for bad in ("", "a/b", "../x", "é", "x" * 65):
        with pytest.raises(ConfigError):
            ks.create_tenant(bad)
    with pytest.raises(ConfigError, match="secret"):
        ks.create_tenant("c", secret="short")


# ---------------------------------------------------------------------- item 4: authenticated index
@pytest.mark.parametrize("sql,field", [
    ("UPDATE artifacts SET name='FINAL-approved'", "name"),
    ("UPDATE artifacts SET created=created+86400", "created"),
    ("UPDATE artifacts SET public='{\"step\":999}'", "public"),
    ("UPDATE artifacts SET public='{}'", "public"),
    ("UPDATE artifacts SET size=size+1", None),
    ("UPDATE artifacts SET content_sha256='" + "0" * 64 + "'", None),
    ("UPDATE artifacts SET format_version=1", None),
    ("UPDATE artifacts SET public='not json'", None),
])
def test_edited_index_metadata_is_refused_on_load_list_and_show(ws, sql, field):
    st = _store(ws, passphrase="pw")
    info = st.save("draft", {"w": b"w" * 100}, public={"step": 3})
    assert [i.public for i in st.list()] == [{"step": 3}]
    db = sqlite3.connect(st.index_path)
    db.execute(sql)
    db.commit()
    db.close()
    for call in (lambda: st.load(info.artifact_id), st.list, lambda: st.show(info.artifact_id)):
        with pytest.raises((IntegrityError, KeyAccessError)) as exc:
            call()
        if field:
            assert f"'{field}'" in str(exc.value) and "edited" in str(exc.value)
    assert st.list(verify=False)[0].artifact_id == info.artifact_id  # the raw index stays inspectable


def test_format_1_checkpoints_still_load(ws, monkeypatch):
    """A checkpoint written by the previous format (header without `public`, DEK bound to the header digest)."""
    import hashlib
    import struct

    st = _store(ws, passphrase="pw")
    aid, created = "a" * 32, 1700000000.5
    header = storage.canonical({"artifact_id": aid, "created": created, "format_version": 1, "name": "old",
                                "tenant": "acme"})
    hsha = hashlib.sha256(header).hexdigest()
    parts = storage._pack_payload({"w": b"v1 data"}, {"m": 1})
    dek = os.urandom(32)
    with open(st.dir / f"{aid}.tnc", "wb") as f:
        f.write(b"TNCK\x01" + struct.pack(">I", len(header)) + header)
        storage.encrypt_stream(dek, parts, f, context=storage.CONTEXT_PREFIX + header)
    wrapped = st.keystore.wrap_dek("acme", dek, aad=hsha.encode())
    db = sqlite3.connect(st.index_path)
    db.execute("INSERT INTO artifacts VALUES (?,?,?,?,?,?,?,?,?,?)",
               (aid, "acme", "old", created, (st.dir / f"{aid}.tnc").stat().st_size,
                hashlib.sha256(b"".join(parts)).hexdigest(), hsha, json.dumps(wrapped.to_dict()), 1, "{}"))
    db.commit()
    db.close()
    blobs, meta, info = st.load(aid)
    assert blobs == {"w": b"v1 data"} and meta == {"m": 1} and info.format_version == 1
    assert st.rotate()["rewrapped"] == 1 and st.load(aid)[0] == {"w": b"v1 data"}


# ---------------------------------------------------------------------- item 6: crash-safe save
_CRASH = textwrap.dedent("""
    import os, signal, sys
    from tinker_nb import storage
    from tinker_nb.ledger import AuditLedger
    from tinker_nb.security.identity import workspace_signer
    from tinker_nb.security.keys import Keystore
    ws, point = sys.argv[1], sys.argv[2]
    ks = Keystore.open(ws, passphrase="pw")
    led = AuditLedger(os.path.join(ws, "audit.sqlite"), tenant="acme", signer=workspace_signer(ws, ks))
    st = storage.ArtifactStore(ws, ks, tenant="acme")
    def crash(name):
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)
    storage._crash_point = crash
    if point == "mid_write":
        real = storage.encrypt_stream
        def half(key, parts, out, **kw):
            out.write(b"partial ciphertext" * 100)
            out.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        storage.encrypt_stream = half
    if point == "in_ledger_commit":
        real_append = led.append
        def append(op, *a, **k):
            if op == "save_state":
                os.kill(os.getpid(), signal.SIGKILL)
            return real_append(op, *a, **k)
        led.append = append
    st.save("crash-" + point, {"w": os.urandom(50000)}, public={"step": 7}, ledger=led,
            audit_summary={"step": 7})
    print("survived")
""")

POINTS = ["begin_logged", "mid_write", "file_written", "file_renamed", "indexed", "in_ledger_commit", "committed"]


def _agree(st, led):
    """Store, index and ledger agree: every indexed checkpoint loads and has exactly one save_state entry,
    every save_begin is closed, no stray files, the ledger verifies and its head is signed."""
    rows = {i.artifact_id: i for i in st.list()}
    for aid in rows:
        st.load(aid)
    files = sorted(p.name for p in st.dir.iterdir())
    assert files == sorted(f"{a}.tnc" for a in rows), files
    entries = led.entries()
    commits = [e.summary["artifact_id"] for e in entries if e.operation == "save_state"]
    assert sorted(commits) == sorted(rows), (commits, rows)
    begun = {e.summary["artifact_id"] for e in entries if e.operation == "save_begin"}
    closed = {e.summary["artifact_id"] for e in entries if e.operation in ("save_state", "save_aborted")}
    assert begun <= closed
    assert led.verify().ok and led.latest_checkpoint().size == led.size()


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_every_step_of_a_save_is_reconciled(ws, point):
    st = _store(ws, passphrase="pw")
    led = AuditLedger(ws / "audit.sqlite", tenant="acme", signer=workspace_signer(ws, st.keystore))
    first = st.save("first", {"w": b"ok"}, ledger=led, audit_summary={"step": 1})
    p = subprocess.run([sys.executable, "-c", _CRASH, str(ws), point], capture_output=True, timeout=120)
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    rep = st.collect_garbage(older_than_s=0, ledger=led)
    _agree(st, led)
    assert st.load(first.artifact_id)[0]["w"] == b"ok"
    names = [i.name for i in st.list()]
    if point in ("indexed", "in_ledger_commit"):
        assert names == ["first", f"crash-{point}"] and len(rep.saves_recovered) == 1
        rec = [e for e in led.entries() if e.operation == "save_state"][-1]
        assert rec.summary["recovered"] is True and rec.summary["step"] == 7
    elif point == "committed":
        assert names == ["first", "crash-committed"] and not rep.saves_recovered and not rep.saves_aborted
    else:
        assert names == ["first"] and len(rep.saves_aborted) == 1
        assert len(rep.orphan_files_removed) == (point == "file_renamed")
        assert len(rep.temp_files_removed) == (point in ("mid_write", "file_written"))
    assert rep.changed == (point != "committed") or rep.checkpoint_signed
    again = st.collect_garbage(older_than_s=0, ledger=led)
    assert not again.changed, again


def test_gc_leaves_a_save_in_progress_alone(ws):
    st = _store(ws, passphrase="pw")
    led = AuditLedger(ws / "audit.sqlite", tenant="acme")
    led.append("save_begin", {"artifact_id": "f" * 32, "name": "n"}, summary={"artifact_id": "f" * 32})
    (st.dir / ".tmp-inflight.tnc").write_bytes(b"x")
    rep = st.collect_garbage(ledger=led)  # default: only leftovers older than an hour
    assert rep.in_progress == ["f" * 32] and not rep.changed and (st.dir / ".tmp-inflight.tnc").exists()


def test_a_failed_save_changes_nothing_but_an_aborted_entry(ws, monkeypatch):
    st = _store(ws, passphrase="pw")
    led = AuditLedger(ws / "audit.sqlite", tenant="acme")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(storage, "encrypt_stream", boom)
    with pytest.raises(OSError):
        st.save("x", {"w": b"1"}, ledger=led)
    assert st.list() == [] and list(st.dir.iterdir()) == []
    assert [e.operation for e in led.entries()] == ["save_begin", "save_aborted"]


def test_no_secret_in_the_new_files(ws):
    st = _store(ws, passphrase="a secret passphrase")
    st.keystore.create_tenant("t2", secret="tenant secret words")
    st.save("n", {"w": b"PLAINTEXT-WEIGHTS" * 10})
    for p in ws.rglob("*"):
        if p.is_file():
            raw = p.read_bytes()
            for s in (b"a secret passphrase", b"tenant secret words", b"PLAINTEXT-WEIGHTS",
                      base64.b64encode(b"tenant secret words")):
                assert s not in raw, p


# ---------------------------------------------------------------------- item 9: small ones
def test_recipient_identities_store_the_32_byte_x_wing_seed_and_old_files_still_load(tmp_path):
    import hashlib

    from tinker_nb.security.kem import RecipientIdentity, load_identity

    ident = RecipientIdentity.generate()
    seed = ident._private_bytes()
    assert len(seed) == 32
    exp = hashlib.shake_256(seed).digest(96)  # X-Wing: SHAKE256(seed, 96) = ML-KEM d ‖ z ‖ X25519 key
    assert RecipientIdentity(exp[:64], exp[64:]).key_id == ident.key_id
    ident.save(tmp_path / "r.key", passphrase="long enough pw")
    assert json.loads((tmp_path / "r.key").read_text())["private_key_format"] == "x-wing-seed"
    assert load_identity(tmp_path / "r.key", passphrase="long enough pw").key_id == ident.key_id
    from pathlib import Path

    vec = Path(__file__).resolve().parents[1] / "vectors" / "tgsp"
    old = load_identity(vec / "recipient.key", passphrase="tgsp-test-vector")  # 96-byte form
    assert old.key_id == json.loads((vec / "recipient.pub").read_text())["key_id"]
    with pytest.raises(KeyAccessError):
        RecipientIdentity.from_private_bytes(b"\0" * 64)


def test_the_passphrase_error_names_real_options(ws, monkeypatch):
    Keystore.open(ws, passphrase="pw")
    with pytest.raises(KeyAccessError) as exc:
        Keystore.open(ws)
    msg = str(exc.value)
    assert "%tinker" not in msg and "ServiceClient(passphrase=...)" in msg and "TINKER_NB_WORKSPACE_PASSPHRASE" in msg


def test_gc_never_invents_save_entries_for_artifacts_saved_without_a_ledger(ws):
    st = _store(ws, passphrase="pw")
    led = AuditLedger(ws / "audit.sqlite", tenant="acme")
    ds = st.save("dataset", {"records.json": b"[]"}, public={"kind": "dataset"})  # e.g. a server data set
    rep = st.collect_garbage(older_than_s=0, ledger=led)
    assert rep.unaudited == [ds.artifact_id] and not rep.changed and led.size() == 0


def test_a_deleted_keystore_is_not_silently_recreated(ws):
    st = _store(ws, passphrase="pw")
    info = st.save("keep", {"w": b"k"})
    (ws / "keystore.json").unlink()
    with pytest.raises(IntegrityError, match=r"keystore.json.bak"):
        Keystore.open(ws, passphrase="pw")
    assert not (ws / "keystore.json").exists()
    (ws / "keystore.json").write_bytes((ws / "keystore.json.bak").read_bytes())
    assert _store(ws, passphrase="pw").load(info.artifact_id)[0]["w"] == b"k"


def test_retire_in_another_process_during_a_save(ws, monkeypatch):
    """Process B (a real second process) rotates and retires version 1 while process A is mid-save."""
    st = _store(ws, passphrase="pw")
    code = textwrap.dedent(f"""
        from tinker_nb.security.keys import Keystore
        from tinker_nb.storage import ArtifactStore
        st = ArtifactStore({str(ws)!r}, Keystore.open({str(ws)!r}, passphrase="pw"), tenant="acme")
        st.rotate()
        st.retire(1)
        print("retired")
    """)

    def other_process(name):
        if name == "file_renamed":
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
            assert out.stdout.strip() == "retired", out.stderr[-2000:]

    monkeypatch.setattr(storage, "_crash_point", other_process)
    info = st.save("mid", {"w": b"m" * 1000})
    monkeypatch.undo()
    assert info.encryption["key_version"] == 2
    assert ArtifactStore(ws, Keystore.open(ws, passphrase="pw"), tenant="acme").load(info.artifact_id)[0]["w"] \
        == b"m" * 1000
