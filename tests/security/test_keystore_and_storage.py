"""Encrypted checkpoints: every flipped byte refused, tenants isolated, rotation, shredding, crash safety."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tinker_nb.errors import ConfigError, IntegrityError, KeyAccessError, TinkerError
from tinker_nb.security.keys import Keystore
from tinker_nb.storage import ArtifactNotFoundError, ArtifactStore


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


def _store(ws, tenant="acme", **kw):
    ks = Keystore.open(ws, **kw)
    if tenant not in ks.tenants():
        ks.create_tenant(tenant)
    return ArtifactStore(ws, ks, tenant=tenant)


def test_round_trip_and_index(ws):
    st = _store(ws, passphrase="pw")
    info = st.save("ckpt", {"a.safetensors": b"\x01" * 5000, "state.json": b"{}"}, metadata={"m": 1},
                   public={"step": 2})
    blobs, meta, info2 = st.load(info.artifact_id)
    assert blobs == {"a.safetensors": b"\x01" * 5000, "state.json": b"{}"} and meta == {"m": 1}
    assert info2.content_sha256 == info.content_sha256 and [i.artifact_id for i in st.list()] == [info.artifact_id]
    assert st.show(info.artifact_id).public == {"step": 2}
    raw = (st.dir / f"{info.artifact_id}.tnc").read_bytes()
    assert b"\x01" * 64 not in raw  # encrypted at rest
    st.delete(info.artifact_id)
    with pytest.raises(ArtifactNotFoundError):
        st.load(info.artifact_id)


def test_every_flipped_byte_is_refused(ws):
    st = _store(ws, passphrase="pw")
    info = st.save("c", {"w": os.urandom(3000)})
    path = st.dir / f"{info.artifact_id}.tnc"
    orig = path.read_bytes()
    rng = random.Random(0)
    positions = list(range(len(orig))) if len(orig) <= 2500 else rng.sample(range(len(orig)), 2000)
    assert len(positions) >= 2000
    for pos in positions:
        data = bytearray(orig)
        data[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        with pytest.raises(IntegrityError):
            st.load(info.artifact_id)
    for bad in (orig[:-1], orig[: len(orig) // 2], orig + b"\x00", orig + orig[-100:]):
        path.write_bytes(bad)
        with pytest.raises(IntegrityError):
            st.load(info.artifact_id)
    path.write_bytes(orig)
    assert st.load(info.artifact_id)[0]["w"] == st.load(info.artifact_id)[0]["w"]


def test_multi_chunk_artifact_cut_at_chunk_boundaries_or_reordered_is_refused(ws):
    """Cobblestone-256 (C2SP): a 56-byte stream header, then 16 KiB plaintext chunks (16,400 bytes each)."""
    import struct

    st = _store(ws, passphrase="pw")
    info = st.save("big", {"w": os.urandom(200_000)})
    path = st.dir / f"{info.artifact_id}.tnc"
    orig = path.read_bytes()
    start = 9 + struct.unpack(">I", orig[5:9])[0] + 56  # first chunk of the payload stream
    chunk = 16_384 + 16
    assert (len(orig) - start) // chunk >= 10
    swapped = bytearray(orig)
    swapped[start + chunk:start + 2 * chunk] = orig[start + 2 * chunk:start + 3 * chunk]
    swapped[start + 2 * chunk:start + 3 * chunk] = orig[start + chunk:start + 2 * chunk]
    dropped = orig[:start + chunk] + orig[start + 2 * chunk:]
    cuts = [orig[:start + k * chunk] for k in (0, 1, 5)]
    for bad in [bytes(swapped), dropped, *cuts]:
        path.write_bytes(bad)
        with pytest.raises(IntegrityError):
            st.load(info.artifact_id)
    path.write_bytes(orig)
    assert len(st.load(info.artifact_id)[0]["w"]) == 200_000


def test_two_processes_changing_the_keystore_lose_nothing(ws, tmp_path):
    """keystore.json read-modify-write is serialised by an flock: concurrent rotations keep every version."""
    ks = Keystore.open(ws, passphrase="pw")
    ks.create_tenant("acme")
    code = textwrap.dedent(f"""
        import sys
        from tinker_nb.security.keys import Keystore
        ks = Keystore.open({str(ws)!r}, passphrase="pw")
        for _ in range(5):
            ks.rotate("acme")
            ks.create_tenant("t" + sys.argv[1] + str(_))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)]) for i in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    ks2 = Keystore.open(ws, passphrase="pw")
    info = ks2.key_info("acme")
    assert sorted(info["versions"]) == list(range(1, 12)) and info["primary_version"] == 11
    assert len(ks2.tenants()) == 11
    # A kernel that opened the keystore before the rotations wraps under the newest primary, not a stale one.
    assert ks.wrap_dek("acme", os.urandom(32), aad=b"x").version == 11


def test_a_named_key_file_is_created_for_a_new_workspace_only(tmp_path):
    kf = tmp_path / "secrets" / "root.key"
    Keystore.open(tmp_path / "new-ws", key_file=kf).create_tenant("t")
    assert oct(kf.stat().st_mode & 0o777) == "0o600" and len(bytes.fromhex(kf.read_text().strip())) == 32
    assert Keystore.open(tmp_path / "new-ws", key_file=kf).tenants() == ["t"]
    kf.unlink()
    with pytest.raises(KeyAccessError, match="restore it"):
        Keystore.open(tmp_path / "new-ws", key_file=kf)
    assert not kf.exists()


def test_tenants_are_isolated_even_with_file_access(ws):
    a = _store(ws, "alpha", passphrase="pw")
    b = _store(ws, "beta", passphrase="pw")
    info = a.save("x", {"w": b"secret weights"})
    with pytest.raises(KeyAccessError):
        b.load(info.artifact_id)
    # copy alpha's file and index row into beta's folder: still refused
    (b.dir / f"{info.artifact_id}.tnc").write_bytes((a.dir / f"{info.artifact_id}.tnc").read_bytes())
    import sqlite3

    db = sqlite3.connect(ws / "artifacts.sqlite")
    db.execute("UPDATE artifacts SET tenant='beta' WHERE artifact_id=?", (info.artifact_id,))
    db.commit()
    db.close()
    with pytest.raises(KeyAccessError):
        b.load(info.artifact_id)


def test_rotation_retire_and_shredding(ws):
    st = _store(ws, passphrase="pw")
    old = st.save("old", {"w": b"1" * 100})
    with pytest.raises(ConfigError, match="still wrapped"):
        st.retire(1)  # 'old' is still under version 1: retiring it would lose the artifact
    assert st.load(old.artifact_id)[0]["w"] == b"1" * 100
    res = st.rotate()
    assert res["primary_version"] == 2 and res["rewrapped"] == 1
    new = st.save("new", {"w": b"2" * 100})
    assert new.encryption["key_version"] == 2
    st.retire(1)  # DEKs were rewrapped, so old artifacts stay readable
    assert st.load(old.artifact_id)[0]["w"] == b"1" * 100
    with pytest.raises(ConfigError):
        st.keystore.retire("acme", 2)
    st.keystore.destroy_tenant("acme")
    for aid in (old.artifact_id, new.artifact_id):
        with pytest.raises(KeyAccessError, match="crypto-shredded"):
            st.load(aid)


def test_root_key_sources(ws, tmp_path, monkeypatch):
    _store(ws, passphrase="right")
    with pytest.raises(KeyAccessError, match="wrong passphrase"):
        Keystore.open(ws, passphrase="wrong")
    with pytest.raises(KeyAccessError, match="passphrase"):
        Keystore.open(ws)
    kf = tmp_path / "root.key"
    kf.write_text(os.urandom(32).hex())
    ks = Keystore.open(tmp_path / "ws2", key_file=kf)
    ks.create_tenant("t")
    assert Keystore.open(tmp_path / "ws2", key_file=kf).tenants() == ["t"]
    kf2 = tmp_path / "other.key"
    kf2.write_text(os.urandom(32).hex())
    with pytest.raises(KeyAccessError):
        Keystore.open(tmp_path / "ws2", key_file=kf2)
    monkeypatch.setenv("TINKER_NB_ROOT_KEY", os.urandom(32).hex())
    Keystore.open(tmp_path / "ws3").create_tenant("e")
    monkeypatch.delenv("TINKER_NB_ROOT_KEY")
    ks4 = Keystore.open(tmp_path / "ws4")  # default: key file outside the workspace, 0600
    key_files = list((tmp_path / "keys").glob("*.key"))
    assert len(key_files) == 1 and oct(key_files[0].stat().st_mode & 0o777) == "0o600"
    assert not list((tmp_path / "ws4").glob("*.key"))
    assert ks4.source == "default-key-file"
    with pytest.raises(KeyAccessError):
        Keystore.open(ws, key_file=tmp_path / "missing.key")


def test_no_key_material_in_files_reprs_or_logs(ws, caplog):
    caplog.set_level(logging.DEBUG)
    st = _store(ws, passphrase="pw")
    info = st.save("x", {"w": b"abc"})
    _kek_id, kek = st.keystore._kek("acme", 1)
    ks_text = (ws / "keystore.json").read_text()
    for secret in (kek.hex(), st.keystore._root.hex()):
        assert secret not in ks_text
        assert secret not in repr(st.keystore) + repr(st) + repr(info) + caplog.text
    try:
        Keystore.open(ws, passphrase="bad")
    except KeyAccessError as exc:
        assert "bad" not in str(exc) and "pw" not in str(exc)


def test_unknown_ids_and_bad_names(ws):
    st = _store(ws, passphrase="pw")
    for bad in ("", "nope"):
        with pytest.raises(TinkerError):
            st.load(bad)
    with pytest.raises(ConfigError):
        st.save("", {"w": b""})
    with pytest.raises(ConfigError):
        st.save("x", {"w": "not bytes"})


def test_sigkill_during_save_leaves_previous_checkpoint_and_clean_index(ws, tmp_path):
    st = _store(ws, passphrase="pw")
    first = st.save("first", {"w": b"ok" * 1000})
    code = textwrap.dedent(f"""
        import os, sys
        from tinker_nb.security.keys import Keystore
        from tinker_nb.storage import ArtifactStore
        ks = Keystore.open({str(ws)!r}, passphrase="pw")
        st = ArtifactStore({str(ws)!r}, ks, tenant="acme")
        blob = os.urandom(150 << 20)
        print("saving", flush=True)
        st.save("big", {{"w": blob}})
        print("saved", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"saving"
    deadline = time.time() + 30
    while not list(st.dir.glob(".tmp-*")) and time.time() < deadline:
        time.sleep(0.005)
    assert list(st.dir.glob(".tmp-*")), "the save never started writing"
    p.send_signal(signal.SIGKILL)
    p.wait()
    names = [i.name for i in st.list()]
    assert names == ["first"]
    assert st.load(first.artifact_id)[0]["w"] == b"ok" * 1000
    # the half-written temp file is never visible as an artifact; garbage collection removes it
    assert not [f for f in st.dir.glob("*.tnc") if not f.name.startswith(".") and f.stem != first.artifact_id]
    assert len(st.collect_garbage(older_than_s=0).temp_files_removed) == 1 and not list(st.dir.glob(".tmp-*"))
