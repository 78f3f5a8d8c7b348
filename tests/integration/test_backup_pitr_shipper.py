"""The log shipper as a real process: kill -9 mid-ship keeps the repository consistent and the next ship resumes;
a node loss with the log shipped every second loses about a second of writes, not a snapshot interval.

A plain ``{kind: ledger}`` set on node core-a (no Redis: the set's node is who ships), a real writer process
appending sample-ledger records, the shipper started as the worker starts it (``python -m continuity.backup.shipper``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from continuity.backup.logship import KIND, load_segments
from continuity.backup.pitr import recover_ledger
from continuity.backup.repository import Repository
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend
from tests.helpers import ROOT, wait_for

PW = "ship-it"
KILLS = 8
SET = "ledger-pitr"
WRITER = """
import json, sys, time
path, rate = sys.argv[1], float(sys.argv[2])
seq, start = 0, time.monotonic()
with open(path, "ab", buffering=0) as fh:
    while True:
        seq += 1
        fh.write(json.dumps({"seq": seq, "epoch": 1, "node": "core-a", "ts": time.time(), "data": {"n": seq}}).encode()
                 + b"\\n")
        time.sleep(max(0.0, start + seq / rate - time.monotonic()))
"""


def setup(tmp_path: Path, interval: str) -> tuple[dict[str, str], Path, Path, Repository]:
    data = tmp_path / "node-core-a"
    data.mkdir()
    ledger = data / "ledger.jsonl"
    repo_dir = tmp_path / "repo"
    cfg = tmp_path / "backup.yml"
    cfg.write_text(json.dumps({"version": 1, "sets": {SET: {
        "node": "core-a", "sources": [{"kind": "ledger", "path": str(ledger)}], "repository": str(repo_dir),
        "schedule": "1h", "ship_log": interval, "key": {"password_env": "CONTINUITY_PASSWORD"}}}}))
    repo = Repository.init(LocalBackend(str(repo_dir)), PW.encode(), kdf={"n": 2**10, "r": 8, "p": 1})
    env = {**os.environ, "CONTINUITY_PASSWORD": PW, "PYTHONPATH": str(ROOT)}
    return env, cfg, ledger, repo


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def shipper(env: dict[str, str], cfg: Path) -> subprocess.Popen[bytes]:
    return start([sys.executable, "-m", "continuity.backup.shipper", "--node", "core-a", "--config", str(cfg)], env)


def writer(env: dict[str, str], ledger: Path, rate: int) -> subprocess.Popen[bytes]:
    return start([sys.executable, "-c", WRITER, str(ledger), str(rate)], env)


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def in_flight(logs: Path) -> bool:
    try:
        return any(".tmp-" in name for name in os.listdir(logs))
    except FileNotFoundError:
        return False


def complete_lines(path: Path) -> bytes:
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1]


@pytest.mark.slow
def test_kill9_mid_ship_keeps_the_log_consistent_and_the_next_ship_resumes(tmp_path: Path) -> None:
    env, cfg, ledger, repo = setup(tmp_path, "20ms")  # ship all the time: kills land inside ships
    rnd = random.Random(int(os.environ.get("KILL9_SEED", "20261201")))
    w = writer(env, ledger, 400)
    torn = aimed = 0
    logs = tmp_path / "repo" / KIND
    try:
        for _ in range(KILLS):
            before = len(list((tmp_path / "repo" / KIND).glob("*")))
            s = shipper(env, cfg)
            wait_for(lambda: len(list((tmp_path / "repo" / KIND).glob("*"))) > before, timeout=30,  # noqa: B023
                     what="a ship of this run")
            # then the kill: the moment an object is being written (its temp file exists), else after a while
            deadline = time.monotonic() + rnd.uniform(0.2, 1.0)
            while time.monotonic() < deadline and not in_flight(logs):
                pass
            aimed += in_flight(logs)
            kill(s)
            leftovers = [p for p in (tmp_path / "repo" / KIND).rglob("*") if ".tmp-" in p.name]
            torn += bool(leftovers)
            segs, bad = load_segments(repo, SET)
            assert not bad, bad
            for a, b in zip(segs, segs[1:], strict=False):  # resumed exactly where the last whole segment ended
                assert b.start == a.end, (a.summary(), b.summary())
    finally:
        kill(w)
    written = complete_lines(ledger)
    s = shipper(env, cfg)
    try:
        deadline = time.monotonic() + 60
        while load_segments(repo, SET)[0][-1].end.count < written.count(b"\n"):
            assert time.monotonic() < deadline, "the restarted shipper did not catch up"
            time.sleep(0.1)
    finally:
        kill(s)
    assert recover_ledger(repo, SET).data == written
    segs, bad = load_segments(repo, SET)
    assert not bad and segs[0].start.count == 0
    assert all(b.start == a.end for a, b in zip(segs, segs[1:], strict=False))
    print(f"kills aimed at a segment being written: {aimed} of {KILLS}, that left a torn object behind: {torn}; "
          f"segments: {len(segs)}")
    assert aimed, "no kill landed while a segment was being written"


def test_node_loss_with_the_log_shipped_loses_about_a_second(tmp_path: Path) -> None:
    env, cfg, ledger, repo = setup(tmp_path, "1s")
    w = writer(env, ledger, 200)
    s = shipper(env, cfg)
    try:
        time.sleep(1.0)
        take_snapshot(repo, [Source("ledger", str(ledger), ledger.name)], set_name=SET, node_name="core-a")
        time.sleep(6.0)  # six seconds of writes after the snapshot: what a snapshot-only restore would lose
    finally:
        kill(w)  # the node's loss: every process of it killed, then its data root gone
        kill(s)
    acknowledged = complete_lines(ledger)
    shutil.rmtree(ledger.parent)
    rec = recover_ledger(repo, SET)
    assert acknowledged.startswith(rec.data)  # exactly a prefix: nothing invented, nothing reordered
    written = [json.loads(line) for line in acknowledged.splitlines()]
    snap_last = rec.base_records
    lost = len(written) - rec.records
    window = written[-1]["ts"] - (rec.last_ts or 0)
    since_snapshot = written[-1]["ts"] - written[snap_last - 1]["ts"]
    print(f"written {len(written)}, restored {rec.records} ({rec.records_from_log} from the log), lost {lost} "
          f"records = {window:.2f}s of writes; a snapshot-only restore would lose {len(written) - snap_last} "
          f"records = {since_snapshot:.2f}s")
    # the ship interval (1 s) plus a ship's own time, with room for a saturated CPU; the snapshot alone: 6 s
    assert window <= 2.5, window
    assert since_snapshot >= 5.5 and lost * 2 < len(written) - snap_last


def test_the_lease_holder_ships_and_the_new_primary_goes_on_after_a_role_move(tmp_path: Path, redis_url: str,
                                                                           rds: Any) -> None:
    """Two nodes' shippers on a service set, the real lease in a real Redis: only the holder ships; after the
    role moves, the new holder ships from the last line both copies share, and the old one's late writes are
    never shipped."""
    from continuity.state import leases
    from tests.helpers import Proc, project_env

    state = tmp_path / "state"
    dirs = {n: state / "nodes" / n / "ledger" for n in ("core-a", "core-b")}
    for d in dirs.values():
        d.mkdir(parents=True)
    append_records(dirs["core-a"] / "ledger.jsonl", range(1, 21), epoch=1)
    shutil.copyfile(dirs["core-a"] / "ledger.jsonl", dirs["core-b"] / "ledger.jsonl")  # the standby's replica
    cfg = tmp_path / "backup.yml"
    cfg.write_text(json.dumps({"version": 1, "sets": {"ledger-live": {
        "node": "core-a", "sources": [{"kind": "service", "service": "ledger"}], "repository": str(tmp_path / "repo"),
        "ship_log": "100ms", "key": {"password_env": "CONTINUITY_PASSWORD"}}}}))
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), PW.encode(), kdf={"n": 2**10, "r": 8, "p": 1})
    env = project_env(redis_url, state, CONTINUITY_BACKUP_CONFIG=str(cfg), CONTINUITY_PASSWORD=PW)
    assert leases.acquire(rds, "ledger", "core-a", 1, 60)
    procs = [Proc([sys.executable, "-m", "continuity.backup.shipper", "--node", n], env, tmp_path / f"{n}.log")
             for n in dirs]
    try:
        def shipped() -> list[tuple[str, int | None, int, int]]:
            return [(s.node, s.epoch, s.start.count, s.end.count) for s in load_segments(repo, "ledger-live")[0]]

        wait_for(lambda: shipped() == [("core-a", 1, 0, 20)], timeout=30, what="core-a's first ship")
        assert leases.release(rds, "ledger", "core-a", 1) and leases.acquire(rds, "ledger", "core-b", 2, 60)
        append_records(dirs["core-a"] / "ledger.jsonl", range(21, 26), epoch=1)  # the old primary's late writes
        append_records(dirs["core-b"] / "ledger.jsonl", range(21, 31), epoch=2)
        wait_for(lambda: ("core-b", 2, 20, 30) in shipped(), timeout=30, what="core-b's ship after the move")
        wait_for(lambda: recover_ledger(repo, "ledger-live").data == (dirs["core-b"] / "ledger.jsonl").read_bytes(),
                 timeout=10, what="the restore to follow core-b")
        # a non-event: give core-a's shipper (100 ms ticks) fifteen ticks to ship its late writes, which it must not
        time.sleep(1.5)
        assert [s for s in shipped() if s[0] == "core-a"] == [("core-a", 1, 0, 20)]
        assert recover_ledger(repo, "ledger-live").data == (dirs["core-b"] / "ledger.jsonl").read_bytes()
    finally:
        for p in procs:
            p.stop()


def append_records(path: Path, seqs: range, epoch: int) -> None:
    with open(path, "ab") as fh:
        for s in seqs:
            fh.write(json.dumps({"seq": s, "epoch": epoch, "ts": time.time(), "data": {"n": s}}).encode() + b"\n")


def test_a_worker_runs_its_nodes_shipper_and_takes_it_down_with_it(tmp_path: Path, start_worker: Any,
                                                                    worker_env: dict[str, str]) -> None:
    """The worker bootstep starts the shipper where a shipping set concerns the node; the shipper exits with it."""
    ledger = tmp_path / "core-a-ledger.jsonl"
    append_records(ledger, range(1, 11), epoch=1)
    cfg = tmp_path / "backup.yml"
    cfg.write_text(json.dumps({"version": 1, "sets": {SET: {
        "node": "core-a", "sources": [{"kind": "ledger", "path": str(ledger)}], "repository": str(tmp_path / "repo"),
        "schedule": "1h", "ship_log": "200ms", "key": {"password_env": "CONTINUITY_PASSWORD"}}}}))
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), PW.encode(), kdf={"n": 2**10, "r": 8, "p": 1})
    env = {**worker_env, "CONTINUITY_BACKUP_CONFIG": str(cfg), "CONTINUITY_PASSWORD": PW,
           "CONTINUITY_REPLICATION": "off"}
    worker = start_worker("core-a", env=env)
    wait_for(lambda: recover_ledger(repo, SET).data == ledger.read_bytes(), timeout=30, what="the first ship")
    append_records(ledger, range(11, 21), epoch=1)
    wait_for(lambda: recover_ledger(repo, SET).data == ledger.read_bytes(), timeout=10, what="the next ship")
    shippers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_shipper_of(p, worker.pid)]
    assert len(shippers) == 1
    worker.stop()  # the worker's shutdown takes its shipper down with it
    wait_for(lambda: not _is_shipper_of(shippers[0], worker.pid), timeout=20,
             what="the shipper to exit with its worker")


def _is_shipper_of(p: Path, session: int) -> bool:
    """Is ``p`` a shipper whose parent is a process of the worker's session?"""
    if "continuity.backup.shipper" not in _cmdline(p):
        return False
    try:
        ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        return os.getsid(ppid) == session
    except (OSError, ValueError, IndexError):
        return False


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
