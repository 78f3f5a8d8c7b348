"""Point-in-time recovery: snapshots plus the shipped ledger log restore exactly the ledger prefix asked for.

Real files, a real (local) repository; the ledger is appended to between ships as the sample service does
(one JSON line per record with ``seq`` and ``ts``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from continuity.backup import logship
from continuity.backup.logship import LedgerShipper, load_segments
from continuity.backup.pitr import PitrUnavailable, recover_ledger, write_ledger
from continuity.backup.prune import forget
from continuity.backup.repository import Repository
from continuity.backup.retention import Policy
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend
from continuity.replication.ledger import GENESIS, LedgerLog

FAST_KDF = {"n": 2**10, "r": 8, "p": 1}
SET = "ledger-live"


def new_repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", kdf=FAST_KDF)


def append(path: Path, seqs: range, t0: float = 1_700_000_000.0, epoch: int = 1) -> None:
    with open(path, "ab") as fh:
        for s in seqs:
            fh.write(json.dumps({"seq": s, "epoch": epoch, "ts": t0 + s / 10, "data": {"n": s}}).encode() + b"\n")


def prefix_upto(path: Path, seq: int) -> bytes:
    out = b""
    for line in path.read_bytes().splitlines(keepends=True):
        if json.loads(line)["seq"] > seq:
            break
        out += line
    return out


def snapshot(repo: Repository, ledger: Path) -> str:
    return take_snapshot(repo, [Source("ledger", str(ledger), ledger.name)], set_name=SET, node_name="core-a")["id"]


def test_restore_to_any_seq_or_time_is_exactly_the_prefix(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    ship = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")
    append(ledger, range(1, 41))
    assert ship.ship(epoch=1).records == 40
    snap = snapshot(repo, ledger)  # base: 40 records
    for lo in range(41, 121, 7):  # small ships, as every second under load
        append(ledger, range(lo, min(lo + 7, 121)))
        ship.ship(epoch=1)
    append(ledger, range(121, 126))  # written, never shipped: what a node loss takes
    segs, bad = load_segments(repo, SET)
    assert not bad and len(segs) == 13
    for seq in (1, 39, 40, 41, 57, 99, 120):
        rec = recover_ledger(repo, SET, seq=seq)
        assert rec.data == prefix_upto(ledger, seq), seq
        assert rec.last_seq == seq
        assert rec.base_snapshot == (snap if seq >= 40 else None)
    rec = recover_ledger(repo, SET, at=1_700_000_000.0 + 7.55)  # between seq 75 (7.5) and 76 (7.6)
    assert rec.data == prefix_upto(ledger, 75) and rec.last_seq == 75
    newest = recover_ledger(repo, SET)
    assert newest.data == prefix_upto(ledger, 120) and newest.newest_seq == 120
    with pytest.raises(PitrUnavailable, match="seq 121 is not in the repository.*seq 120"):
        recover_ledger(repo, SET, seq=121)
    out = tmp_path / "restored" / "ledger.jsonl"
    write_ledger(recover_ledger(repo, SET, seq=88), out)
    assert out.read_bytes() == prefix_upto(ledger, 88)


def test_a_base_snapshot_past_the_target_is_not_used(tmp_path: Path) -> None:
    """A time target inside a snapshot: the older base is used, so the restored set never holds later records."""
    repo = new_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    ship = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")
    append(ledger, range(1, 21))
    first = snapshot(repo, ledger)
    ship.ship()
    append(ledger, range(21, 61))
    ship.ship()
    snapshot(repo, ledger)  # ends at seq 60, taken "now" (after every ts of the test ledger)
    rec = recover_ledger(repo, SET, seq=45)
    assert rec.base_snapshot == first and rec.data == prefix_upto(ledger, 45)


def test_a_snapshot_taken_before_the_time_target_but_holding_later_records_is_not_the_base(tmp_path: Path) -> None:
    """Records accepted after a snapshot started are in it: by time alone it would qualify as a base."""
    import time

    repo = new_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    ship = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")
    now = time.time()
    append(ledger, range(1, 21), t0=now - 100)
    first = snapshot(repo, ledger)
    append(ledger, range(21, 61), t0=now + 1000)  # "accepted" after the next snapshot's start time
    ship.ship()
    snapshot(repo, ledger)
    rec = recover_ledger(repo, SET, at=now + 1000 + 4.55)
    assert rec.data == prefix_upto(ledger, 45) and rec.base_snapshot == first


def test_forked_histories_are_never_spliced(tmp_path: Path) -> None:
    """An old primary shipped a tail the new primary never had; the restore follows the new epoch's branch."""
    repo = new_repo(tmp_path)
    old, new = tmp_path / "a" / "ledger.jsonl", tmp_path / "b" / "ledger.jsonl"
    old.parent.mkdir()
    new.parent.mkdir()
    append(old, range(1, 31))
    append(new, range(1, 31))  # the standby's byte-identical copy of the replicated prefix
    a = LedgerShipper(repo, SET, "ledger.jsonl", old, "core-a")
    a.ship(epoch=1)
    append(old, range(31, 36), t0=1_700_000_000.0, epoch=1)  # unreplicated tail, shipped by the old primary
    a.ship(epoch=1)
    append(new, range(31, 41), t0=1_700_000_001.0, epoch=2)  # the new primary reuses seqs 31.. with new data
    b = LedgerShipper(repo, SET, "ledger.jsonl", new, "core-b")
    assert b.resume().count == 30  # it resumes at the last position both histories share
    b.ship(epoch=2)
    rec = recover_ledger(repo, SET, seq=38)
    assert rec.data == prefix_upto(new, 38)
    assert b'"epoch": 1, "ts": 1700000003.1' not in rec.data  # none of the old tail


def test_resume_after_restart_ships_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    append(ledger, range(1, 11))
    LedgerShipper(repo, SET, ledger.name, ledger, "core-a").ship()
    append(ledger, range(11, 21))
    again = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")  # a restarted shipper: no local state
    res = again.ship()
    assert res.records == 10 and res.position.count == 20
    segs, _ = load_segments(repo, SET)
    assert [(s.start.count, s.end.count) for s in segs] == [(0, 10), (10, 20)]
    log = LedgerLog(ledger).open()
    assert logship.resume_point(log, segs) == log.end != GENESIS


def test_forget_drops_only_segments_the_oldest_kept_snapshot_covers(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    ship = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")
    for lo in (1, 11, 21):
        append(ledger, range(lo, lo + 10))
        ship.ship()
        snapshot(repo, ledger)
    append(ledger, range(31, 36))
    ship.ship()
    from continuity.backup.api import forget_log

    forget(repo, Policy(keep_last=1), set_name=SET)
    removed = forget_log(repo, SET)
    segs, _ = load_segments(repo, SET)
    assert removed == 3 and [(s.start.count, s.end.count) for s in segs] == [(30, 35)]
    assert recover_ledger(repo, SET, seq=33).data == prefix_upto(ledger, 33)
    with pytest.raises(PitrUnavailable):
        recover_ledger(repo, SET, seq=15)  # before the kept snapshot, and its segments are gone
    snapshot(repo, ledger)  # now covers every segment: the newest one stays all the same
    forget(repo, Policy(keep_last=1), set_name=SET)
    assert forget_log(repo, SET) == 0
    assert [(s.start.count, s.end.count) for s in load_segments(repo, SET)[0]] == [(30, 35)]
    append(ledger, range(36, 41))
    assert LedgerShipper(repo, SET, ledger.name, ledger, "core-a").ship().position.count == 40  # resumed at 35
    assert [(s.start.count, s.end.count) for s in load_segments(repo, SET)[0]] == [(30, 35), (35, 40)]


def test_a_segment_whose_lines_do_not_lead_to_its_end_is_damaged(tmp_path: Path) -> None:
    """Sealed and well-formed is not enough: the lines must hash from its start to its end, or it is never used."""
    repo = new_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    append(ledger, range(1, 11))
    LedgerShipper(repo, SET, ledger.name, ledger, "core-a").ship()
    seg = load_segments(repo, SET)[0][0]
    forged = logship.make_segment(SET, seg.source, "core-x", 9, seg.start, seg.payload.replace(b'"n": 3', b'"n": 4'),
                                  seg.end, seg.shipped + 1)
    sid = logship.save_segment(repo, forged)
    good, bad = load_segments(repo, SET)
    assert [s.id for s in good] == [seg.id] and sid in bad and "do not lead" in bad[sid]
    assert recover_ledger(repo, SET).data == ledger.read_bytes()


def test_only_the_holder_ships_a_service_ledger_and_only_its_own_files() -> None:
    from continuity.backup.config import BackupConfig, LoadedConfig
    from continuity.backup.shipper import Holder, ship_jobs

    model = BackupConfig.model_validate({"version": 1, "sets": {
        "live": {"node": "core-a", "sources": [{"kind": "service", "service": "ledger"}], "repository": "r",
                 "ship_log": "1s", "key": {"password_env": "P"}},
        "plain": {"node": "core-b", "sources": [{"kind": "ledger", "path": "/data/l.jsonl"}], "repository": "r",
                  "ship_log": "2s", "key": {"password_env": "P"}},
        "quiet": {"node": "core-b", "sources": [{"kind": "ledger", "path": "/data/q.jsonl"}], "repository": "r",
                  "key": {"password_env": "P"}}}})
    cfg = LoadedConfig(model, Path("/proj"), "b.yml", service_data={"ledger": [("ledger", "ledger.jsonl"),
                                                                               ("sqlite", "ledger.db")]})
    held = {"ledger": Holder("core-b", 4)}
    assert [(j.set_name, j.source, j.epoch) for j in ship_jobs(cfg, "core-b", held)] == [
        ("live", "ledger.jsonl", 4), ("plain", "l.jsonl", None)]
    assert all("/core-b/" in j.path or j.path == "/data/l.jsonl" for j in ship_jobs(cfg, "core-b", held))
    assert ship_jobs(cfg, "core-a", held) == []  # the standby (and the set's home node) ships nothing
    assert ship_jobs(cfg, "core-a", {"ledger": None}) == []  # nobody holds it: nobody ships it


def test_cli_restore_to_seq_and_time_and_its_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_backup_damage import run_cli

    repo = new_repo(tmp_path)
    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    monkeypatch.setenv("CONTINUITY_REPOSITORY", str(tmp_path / "repo"))
    ledger = tmp_path / "ledger.jsonl"
    ship = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")
    append(ledger, range(1, 31))
    snapshot(repo, ledger)
    append(ledger, range(31, 61))
    ship.ship()
    rc, out, err = run_cli(["backup", "restore", "--set", SET, "--seq", "47", "--target", str(tmp_path / "t1"),
                            "--json"], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["pitr"]["last_seq"] == 47 and doc["pitr"]["records_from_log"] == 17
    assert (tmp_path / "t1" / "ledger.jsonl").read_bytes() == prefix_upto(ledger, 47)
    rc, out, err = run_cli(["backup", "restore", "--set", SET, "--at", "2023-11-14T22:13:24.05Z",  # ts of seq 40
                            "--target", str(tmp_path / "t2")], capsys)
    assert rc == 0, err
    assert (tmp_path / "t2" / "ledger.jsonl").read_bytes() == prefix_upto(ledger, 40)
    assert "ends at seq 40" in out
    bad = [(["--set", SET, "--seq", "99"], "seq 99 is not in the repository"),
           (["--set", SET, "--at", "yesterday"], "--at 'yesterday': not a time"),
           (["--set", SET, "--at", "nan"], "not a time"),
           (["--set", SET, "--seq", "3", "--at", "5"], "give one"),
           (["--seq", "3"], "need --set"),
           (["latest", "--set", SET, "--seq", "3", "--include", "x"], "--include"),
           (["abc123", "--set", SET, "--seq", "3"], "leave SNAPSHOT out"),
           ([], "restore needs SNAPSHOT"),
           (["--set", SET, "--seq", "3", "--ledger", "other.jsonl"], "no ledger 'other.jsonl'")]
    for args, said in bad:
        rc, out, err = run_cli(["backup", "restore", "--target", str(tmp_path / "t3"), *args], capsys)
        assert rc == 2 and said in err and len(err.strip().splitlines()) == 1, (args, rc, err)
    assert not (tmp_path / "t3").exists()
    rc, out, err = run_cli(["backup", "log", "--json"], capsys)
    assert rc == 0, err
    assert [(r["set"], r["ledger"], r["first_line"], r["last_line"], r["last_seq"]) for r in json.loads(out)] == [
        (SET, "ledger.jsonl", 1, 60, 60)]
    rc, out, err = run_cli(["backup", "log"], capsys)
    assert rc == 0 and SET in out and "1-60" in out
    seg = next((tmp_path / "repo" / "logs").iterdir())
    seg.write_bytes(seg.read_bytes()[:-3])
    rc, out, err = run_cli(["backup", "log", "--json"], capsys)
    assert rc == 1 and f"damaged log segment {seg.name[:8]}" in err


def test_restore_service_at_swaps_in_the_exact_prefix_and_keeps_runtime_files(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """What prepare calls as its last resort: staged, proven, swapped; the node's own runtime files stay."""
    from continuity.backup.api import restore_service_at
    from continuity.backup.config import load_backup_config

    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    repo = new_repo(tmp_path)
    ledger = tmp_path / "src" / "ledger.jsonl"
    ledger.parent.mkdir()
    cfg_file = tmp_path / "backup.yml"
    cfg_file.write_text(json.dumps({"version": 1, "sets": {SET: {
        "node": "core-a", "sources": [{"kind": "ledger", "path": str(ledger)}], "repository": str(tmp_path / "repo"),
        "ship_log": "1s", "key": {"password_env": "CONTINUITY_PASSWORD"}}}}))
    cfg = load_backup_config(cfg_file)
    target = tmp_path / "node-b" / "ledger"
    target.mkdir(parents=True)
    (target / "epoch.max").write_text('{"epoch": 7}')
    (target / "ledger.jsonl").write_text("stale\n")
    append(ledger, range(1, 21))
    ship = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")
    ship.ship()
    res = restore_service_at(SET, cfg, target, seq=12)  # no snapshot yet: the log from the first line
    assert res.base is None and res.last_seq == 12 and res.newest_seq == 20
    assert (target / "ledger.jsonl").read_bytes() == prefix_upto(ledger, 12)
    snap = snapshot(repo, ledger)
    append(ledger, range(21, 41))
    ship.ship()
    res = restore_service_at(SET, cfg, target)
    assert res.base is not None and res.base_snapshot == snap and res.records_from_log == 20
    assert (target / "ledger.jsonl").read_bytes() == ledger.read_bytes()
    assert (target / "epoch.max").read_text() == '{"epoch": 7}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["ledger"]  # no staging left behind


def test_restore_drill_proves_the_log_and_names_a_gap_or_a_damaged_segment(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from continuity.backup.api import restore_drill_set
    from continuity.backup.config import load_backup_config

    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    repo = new_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    cfg_file = tmp_path / "backup.yml"
    cfg_file.write_text(json.dumps({"version": 1, "sets": {SET: {
        "node": "core-a", "sources": [{"kind": "ledger", "path": str(ledger)}], "repository": str(tmp_path / "repo"),
        "ship_log": "1s", "key": {"password_env": "CONTINUITY_PASSWORD"}}}}))
    ship = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")
    append(ledger, range(1, 11))
    snapshot(repo, ledger)
    for lo in range(11, 51, 10):
        append(ledger, range(lo, lo + 10))
        ship.ship()
    drill = restore_drill_set(SET, load_backup_config(cfg_file))
    assert drill["ok"] and drill["pitr"]["ok"] and drill["pitr"]["newest_seq"] == 50
    assert drill["pitr"]["checked_seq"] == 36  # the middle line of the middle segment (30, 40)
    segs, _ = load_segments(repo, SET)
    middle = next(s for s in segs if s.start.count == 20)
    stored = tmp_path / "repo" / "logs" / middle.id
    kept = stored.read_bytes()
    stored.unlink()  # a lost segment: the log no longer joins up to its end
    drill = restore_drill_set(SET, load_backup_config(cfg_file))
    assert not drill["ok"] and "does not join up" in drill["pitr"]["reason"]
    stored.write_bytes(kept[:-1] + bytes([kept[-1] ^ 1]))  # a damaged one: named, never used
    drill = restore_drill_set(SET, load_backup_config(cfg_file))
    assert not drill["ok"] and "damaged log segment" in drill["pitr"]["reason"]
    stored.write_bytes(kept)
    assert restore_drill_set(SET, load_backup_config(cfg_file))["ok"]


@pytest.mark.parametrize("split", [False, True], ids=["join-inside-a-segment", "join-at-a-segment-start"])
def test_an_old_primarys_shipped_tail_is_never_joined_to_the_new_history(tmp_path: Path, split: bool) -> None:
    """The new primary's snapshot ends where the old primary's shipped tail goes on: same line count, other
    chain. Joining by count alone would splice the old tail onto the new history."""
    repo = new_repo(tmp_path)
    old, new = tmp_path / "a" / "ledger.jsonl", tmp_path / "b" / "ledger.jsonl"
    old.parent.mkdir()
    new.parent.mkdir()
    append(old, range(1, 31))
    append(new, range(1, 31))
    a = LedgerShipper(repo, SET, "ledger.jsonl", old, "core-a")
    a.ship(epoch=1)
    append(old, range(31, 36), epoch=1)
    if split:
        a.ship(epoch=1)  # the tail shipped as (30, 35) and (35, 38): one starts exactly where the snapshot ends
    append(old, range(36, 39), epoch=1)
    a.ship(epoch=1)
    append(new, range(31, 36), t0=1_700_000_001.0, epoch=2)
    snapshot(repo, new)  # the new primary's snapshot (35 lines); its shipper has not shipped yet
    assert recover_ledger(repo, SET).data == new.read_bytes()


def test_forget_keeps_a_segment_that_reaches_past_the_oldest_kept_snapshot(tmp_path: Path) -> None:
    """A snapshot of a copy that lagged (fewer lines than were already shipped): segments past its end stay."""
    repo = new_repo(tmp_path)
    ledger, lagging = tmp_path / "ledger.jsonl", tmp_path / "lag" / "ledger.jsonl"
    lagging.parent.mkdir()
    ship = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")
    append(ledger, range(1, 16))
    ship.ship()
    append(ledger, range(16, 21))
    ship.ship()
    lagging.write_bytes(prefix_upto(ledger, 10))
    snapshot(repo, lagging)
    from continuity.backup.api import forget_log

    assert forget_log(repo, SET) == 0
    assert recover_ledger(repo, SET).data == ledger.read_bytes()
