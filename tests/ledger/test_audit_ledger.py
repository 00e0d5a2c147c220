"""Tamper evidence: edits, deletions, insertions, reordering, truncation and rollback are found and located."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from tinker_nb.errors import ConfigError
from tinker_nb.ledger import AuditLedger, verify_consistency, verify_inclusion
from tinker_nb.security.signing import HybridSigner


@pytest.fixture(scope="module")
def signer():
    return HybridSigner.generate()


def _ledger(tmp_path, signer, n=10):
    led = AuditLedger(tmp_path / "audit.sqlite", tenant="t", signer=signer)
    for i in range(n):
        led.append("optim_step", {"step": i, "secret": "hunter2"}, summary={"step": i})
    return led


def _sql(led, q, *args):
    db = sqlite3.connect(led.path)
    db.execute(q, args)
    db.commit()
    db.close()


def test_clean_ledger_verifies_with_checkpoints(tmp_path, signer):
    led = _ledger(tmp_path, signer)
    cp = led.checkpoint()
    led.append("load_state", {"artifact_id": "x"})  # not in SIGNED_AFTER: no checkpoint follows
    rep = led.verify()
    assert rep.ok and rep.entries_checked == 11 and rep.checkpoints_checked == 1
    assert cp.size == 10 and led.state()["entries"] == 11


@pytest.mark.parametrize("attack,seq,reason", [
    ("UPDATE entries SET operation='sample' WHERE seq=4", 4, "edited"),
    ("UPDATE entries SET summary='{\"step\":99}' WHERE seq=6", 6, "edited"),
    ("DELETE FROM entries WHERE seq=3", 3, "sequence break"),
    ("UPDATE entries SET seq=seq+1000 WHERE seq=5", 5, "sequence break"),
    ("UPDATE entries SET operation=42 WHERE seq=2", 2, "edited"),
    ("UPDATE entries SET ts=X'00ff' WHERE seq=7", 7, "edited"),
    ("UPDATE entries SET operation='sampl\u00e9\"x' WHERE seq=8", 8, "edited"),
])
def test_edits_and_deletions_are_located(tmp_path, signer, attack, seq, reason):
    led = _ledger(tmp_path, signer)
    _sql(led, attack)
    rep = led.verify()
    assert not rep.ok and rep.first_bad_seq == seq and reason in rep.reason


def _rewrite(led, rows):
    _sql(led, "DELETE FROM entries")
    db = sqlite3.connect(led.path)
    db.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def test_reordering_is_located(tmp_path, signer):
    led = _ledger(tmp_path, signer)
    rows = sqlite3.connect(led.path).execute("SELECT * FROM entries ORDER BY seq").fetchall()
    _rewrite(led, rows[:3] + [rows[4], rows[3]] + rows[5:])
    rep = led.verify()
    assert not rep.ok and rep.first_bad_seq == 3


def test_insertion_with_recomputed_hashes_is_located(tmp_path, signer):
    """An attacker who recomputes the inserted entry's own hashes still breaks the next link."""
    from tinker_nb.ledger.log import Entry, record_hash

    led = _ledger(tmp_path, signer)
    rows = sqlite3.connect(led.path).execute("SELECT * FROM entries ORDER BY seq").fetchall()
    fake = Entry(5, rows[4][2], "t", "load_state", "0" * 64, {}, rows[4][7], "")
    fake.record_hash = record_hash(fake.body())
    fake_row = ("t", 5, fake.ts, fake.operation, fake.params_digest, "{}", fake.prev_hash, fake.record_hash)
    shifted = [(r[0], r[1] + 1, *r[2:]) for r in rows[5:]]
    _rewrite(led, rows[:5] + [fake_row] + shifted)
    rep = led.verify()
    assert not rep.ok and rep.first_bad_seq == 6 and "chain broken" in rep.reason


def test_truncation_and_rollback_behind_a_signed_checkpoint(tmp_path, signer):
    led = _ledger(tmp_path, signer)
    led.checkpoint()
    _sql(led, "DELETE FROM entries WHERE seq>=7")  # a clean tail cut keeps the chain valid...
    rep = led.verify()
    assert not rep.ok and "truncation or rollback" in rep.reason  # ...but the signed checkpoint catches it


def test_cutting_entries_and_their_checkpoints_is_caught_by_a_checkpoint_kept_elsewhere(tmp_path, signer):
    led = _ledger(tmp_path, signer)
    kept = led.checkpoint().to_dict()  # e.g. exported, or inside a TGSP package's evidence
    _sql(led, "DELETE FROM entries WHERE seq>=7")
    _sql(led, "DELETE FROM checkpoints")  # whoever can write the file can drop the stored checkpoints too
    assert led.verify().ok  # the file alone cannot tell...
    rep = led.verify(trusted_checkpoints=[kept])
    assert not rep.ok and "truncation or rollback" in rep.reason  # ...the kept checkpoint can
    forged = {**kept, "size": 5}
    assert not led.verify(trusted_checkpoints=[forged]).ok  # its signature covers the size
    with pytest.raises(ConfigError):
        led.verify(trusted_checkpoints=[{"size": 3}])
    with pytest.raises(ConfigError, match="tenant"):
        led.verify(trusted_checkpoints=[{**kept, "tenant": "other"}])


def test_rewritten_history_is_a_fork(tmp_path, signer):
    led = _ledger(tmp_path, signer, n=5)
    led.checkpoint()
    # an attacker rebuilds a valid chain with different contents from scratch
    _sql(led, "DELETE FROM entries")
    for i in range(5):
        led.append("optim_step", {"step": i + 100})
    rep = led.verify()
    assert not rep.ok and "fork or rewrite" in rep.reason


def test_forged_checkpoint_signature(tmp_path, signer):
    led = _ledger(tmp_path, signer, n=3)
    led.checkpoint()
    _sql(led, "UPDATE checkpoints SET ts='2000-01-01T00:00:00+00:00'")
    assert "checkpoint 0" in led.verify().reason
    other = HybridSigner.generate()
    assert not led.verify(public_key=other.public_key()).ok


def test_proofs(tmp_path, signer):
    led = _ledger(tmp_path, signer, n=13)
    p = led.inclusion_proof(5)
    assert verify_inclusion(bytes.fromhex(p["leaf_hash"]), 5, 13, [bytes.fromhex(x) for x in p["proof"]],
                            bytes.fromhex(p["root_hash"]))
    c = led.consistency_proof(7)
    assert verify_consistency(7, 13, bytes.fromhex(c["old_root"]), bytes.fromhex(c["new_root"]),
                              [bytes.fromhex(x) for x in c["proof"]])
    with pytest.raises(ConfigError):
        led.inclusion_proof(99)


def test_raw_params_never_stored(tmp_path, signer):
    led = _ledger(tmp_path, signer)
    for f in tmp_path.glob("audit.sqlite*"):
        assert b"hunter2" not in f.read_bytes()
    with pytest.raises(ConfigError):
        led.append("x", {}, summary={"blob": [1, 2]})
    with pytest.raises(ConfigError):
        led.append("", {})


def _writer(path, n):
    led = AuditLedger(path, tenant="t")
    for i in range(n):
        led.append("op", {"i": i})


def test_two_processes_append_concurrently(tmp_path):
    path = tmp_path / "audit.sqlite"
    AuditLedger(path, tenant="t")
    ctx = mp.get_context("spawn")
    ps = [ctx.Process(target=_writer, args=(path, 150)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
    led = AuditLedger(path, tenant="t")
    assert led.size() == 300 and led.verify().ok


def test_to_pandas(tmp_path, signer):
    df = _ledger(tmp_path, signer, n=4).to_pandas()
    assert list(df.index) == [0, 1, 2, 3] and set(df["operation"]) == {"optim_step"}


# ---------------------------------------------------------------------- issue 13 item 5: the tail
@pytest.mark.parametrize("op", ["package", "save_state", "rotate_keys", "shred_tenant"])
def test_releases_saves_and_key_changes_are_followed_by_a_signed_checkpoint(tmp_path, signer, op):
    led = _ledger(tmp_path, signer, n=3)
    led.append(op, {"x": 1}, summary={"x": 1})
    assert led.latest_checkpoint().size == led.size() == 4
    _sql(led, "DELETE FROM entries WHERE seq=3")  # the release/save vanishes from the tail
    rep = led.verify()
    assert not rep.ok and "truncation or rollback" in rep.reason


def test_cutting_the_tail_with_its_checkpoints_is_caught_by_a_checkpoint_kept_elsewhere(tmp_path, signer):
    import json

    from tinker_nb.ledger import load_checkpoint_file

    led = _ledger(tmp_path, signer, n=6)
    kept = led.checkpoint()
    (tmp_path / "kept.json").write_text(json.dumps(kept.to_dict()))
    _sql(led, "DELETE FROM entries WHERE seq>=4")
    _sql(led, "DELETE FROM checkpoints")
    assert led.verify().ok  # the file alone cannot tell
    rep = led.verify(trusted_checkpoints=[load_checkpoint_file(tmp_path / "kept.json")])
    assert not rep.ok and "truncation or rollback" in rep.reason


def test_read_only_ledgers_never_write(tmp_path, signer):
    from tinker_nb.errors import IntegrityError

    led = _ledger(tmp_path, signer, n=2)
    led.close()
    before = (tmp_path / "audit.sqlite").read_bytes()
    ro = AuditLedger(tmp_path / "audit.sqlite", tenant="t", readonly=True, signer=signer)
    assert ro.verify().ok and ro.size() == 2
    with pytest.raises(ConfigError, match="read-only"):
        ro.append("x")
    with pytest.raises(ConfigError, match="read-only"):
        ro.checkpoint()
    ro.close()
    assert (tmp_path / "audit.sqlite").read_bytes() == before
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with pytest.raises(IntegrityError, match="not an audit ledger"):
        AuditLedger(tmp_path / "empty.sqlite", tenant="t", readonly=True)
    assert (tmp_path / "empty.sqlite").read_bytes() == b""
    with pytest.raises(ConfigError, match="no audit ledger file"):
        AuditLedger(tmp_path / "missing.sqlite", tenant="t", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()


def test_incremental_checkpoint_roots_equal_the_full_tree_across_writers(tmp_path, signer):
    from tinker_nb.ledger import merkle

    a = AuditLedger(tmp_path / "audit.sqlite", tenant="t", signer=signer)
    b = AuditLedger(tmp_path / "audit.sqlite", tenant="t", signer=signer)  # another process's view
    for i in range(37):
        (a if i % 3 else b).append("optim_step", {"i": i})
        if i % 5 == 0:
            cp = (b if i % 2 else a).checkpoint()
            assert cp.root_hash == merkle.root(a._leaf_hashes()).hex() and cp.size == i + 1
    _sql(a, "UPDATE entries SET record_hash='" + "0" * 64 + "' WHERE seq=36")  # rewrite the cached boundary
    assert a.checkpoint().root_hash == merkle.root(a._leaf_hashes()).hex()  # rebuilt, not stale
    assert a.verify().ok is False
