"""A ledger on its primary: acknowledgements, lag, and what a sync write is told."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from continuity.replication.ledger import LedgerLog
from continuity.replication.streams import LedgerStream


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def append(path: Path, *seqs: int) -> int:
    with open(path, "ab") as fh:
        for s in seqs:
            fh.write(json.dumps({"seq": s}).encode() + b"\n")
    return path.stat().st_size


def stream(tmp_path: Path, clock: Clock | None = None) -> tuple[LedgerStream, Path]:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b"")
    return LedgerStream("ledger", "ledger.jsonl", LedgerLog(path).open(), clock=clock or Clock()), path


def test_lag_is_records_bytes_and_the_age_of_the_oldest_change_a_standby_lacks(tmp_path: Path) -> None:
    clock = Clock()
    s, path = stream(tmp_path, clock)
    s.connected("b", s.end)
    append(path, 1, 2)
    s.refresh()
    first = s.end
    clock.t += 0.3
    append(path, 3)
    s.refresh()
    clock.t += 0.2
    lag = s.lag("b")
    assert lag is not None and lag.records == 3 and lag.bytes == s.end.offset and abs(lag.seconds - 0.5) < 1e-9
    s.ack("b", first)
    lag = s.lag("b")
    assert lag is not None and lag.records == 1 and abs(lag.seconds - 0.2) < 1e-9
    s.ack("b", s.end)
    assert s.lag("b") == type(lag)(0.0, 0, 0)
    assert s.peers["b"].streaming


def test_a_sync_write_returns_once_enough_standbys_acknowledged_it(tmp_path: Path) -> None:
    s, path = stream(tmp_path)
    s.connected("b", s.end)
    s.connected("c", s.end)
    upto = append(path, 1)
    s.refresh()
    got = []
    t = threading.Thread(target=lambda: got.append(s.wait(upto, 2, 30.0, "refuse")))
    t.start()
    s.ack("b", s.end)
    t.join(0.2)
    assert t.is_alive()  # one of two is not enough
    s.ack("c", s.end)
    t.join(10)
    assert got and got[0].ok and got[0].mode == "sync" and got[0].acked_by == ("b", "c")


def test_with_too_few_standbys_refuse_refuses_at_once_and_degrade_acknowledges_and_says_so(tmp_path: Path) -> None:
    s, path = stream(tmp_path)
    upto = append(path, 1)
    res = s.wait(upto, 1, 30.0, "refuse")  # no standby connected: no waiting for the timeout
    assert not res.ok and "0 of 1" in res.reason
    res = s.wait(upto, 1, 30.0, "degrade")
    assert res.ok and res.mode == "degraded" and s.degraded
    s.connected("b", s.end)
    s.ack("b", s.end)
    upto = append(path, 2)
    t = threading.Thread(target=lambda: s.ack("b", s.refresh()))
    t.start()
    res = s.wait(upto, 1, 30.0, "degrade")
    t.join()
    assert res.ok and res.mode == "sync" and s.degraded is None  # back to sync once a standby streams again


def test_a_connected_standby_that_does_not_acknowledge_in_time_gets_the_write_refused(tmp_path: Path) -> None:
    s, path = stream(tmp_path)
    s.connected("b", s.end)
    upto = append(path, 1)
    res = s.wait(upto, 1, 0.05, "refuse")
    assert not res.ok and "within" in res.reason
    res = s.wait(upto, 1, 0.05, "degrade")
    assert res.ok and res.mode == "degraded"


def test_while_degraded_a_write_does_not_wait_for_a_standby_still_catching_up(tmp_path: Path) -> None:
    s, path = stream(tmp_path)
    upto = append(path, *range(1, 100))
    s.degraded = "earlier"
    s.connected("b", s.log.position(0))  # reconnected far behind
    res = s.wait(upto, 1, 30.0, "degrade")  # returns at once, does not sit out 30 s
    assert res.ok and res.mode == "degraded"


def test_acknowledgements_never_move_a_standby_backwards_and_disconnects_count(tmp_path: Path) -> None:
    s, path = stream(tmp_path)
    append(path, 1, 2)
    s.refresh()
    s.connected("b", s.end)
    s.ack("b", s.log.position(1))
    assert s.peers["b"].acked == s.end
    s.disconnected("b")
    upto = append(path, 3)
    assert not s.wait(upto, 1, 30.0, "refuse").ok


def test_the_committed_position_is_what_clients_were_told_is_stored(tmp_path: Path) -> None:
    """Async: the primary's end (a write is acknowledged once it is written here). Sync: what ``need`` standbys
    hold (a write is acknowledged only then), unless degraded (then writes are acknowledged without them)."""
    clock = Clock()
    s, path = stream(tmp_path, clock)
    assert s.committed(0) == (s.end, None, None)
    append(path, 1, 2)
    s.refresh()
    two = s.end
    clock.t += 0.5
    append(path, 3)
    s.refresh()
    pos, last_seq, seen = s.committed(0)
    assert (pos.count, last_seq, seen) == (3, 3, 1000.5)
    s.connected("b", s.log.position(0))
    s.connected("c", s.log.position(0))
    s.ack("b", two)
    s.ack("c", s.log.position(1))
    pos, last_seq, seen = s.committed(1)  # sync, one standby needed: b holds 2
    assert (pos.count, last_seq, seen) == (2, 2, 1000.0)
    assert s.committed(2)[0].count == 1  # two needed: the second highest holds 1
    s.degraded = "no standby"
    assert s.committed(2)[0].count == 3


def _pwrite(path: Path, data: bytes, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def test_a_primary_whose_index_read_bytes_since_repaired_in_place_reindexes_and_meets_its_standby(
        tmp_path: Path) -> None:
    """The drills' failed-rollback case: the primary's file was re-read while a line was corrupted, then the
    original bytes were put back in place (same inode, same size). Its index still hashes the corrupted line, so
    a standby holding the true bytes seemed to part from it there and was refused for good ("primary-behind")."""
    s, path = stream(tmp_path)
    append(path, *range(1, 301))
    good = path.read_bytes()
    standby = LedgerLog(tmp_path / "standby.jsonl", writable=True).open()
    data, end = LedgerLog(path).open().read(standby.end, 1 << 20)
    standby.apply(standby.end, data, end)
    middle = good.index(b'{"seq": 150}')
    _pwrite(path, b"XXXXXX", middle + 1)
    s.log.reindex()  # the file was swapped out and back: the primary re-read it while corrupted
    _pwrite(path, good[middle + 1:middle + 7], middle + 1)  # the repair puts the original bytes back in place
    gen = s.log.generation
    probes = standby.probes(0, standby.count)
    assert s.match(probes) == standby.end  # without the re-hash: the position before seq 150
    assert s.log.generation == gen + 1 and s.end == standby.end


def test_a_real_divergence_is_matched_where_it_is_without_reindexing(tmp_path: Path) -> None:
    s, path = stream(tmp_path)
    append(path, *range(1, 201))
    s.refresh()
    other = tmp_path / "old-primary.jsonl"
    other.write_bytes(path.read_bytes()[: path.read_bytes().index(b'{"seq": 181}')])
    append(other, 9001, 9002, 9003)  # a tail the primary never had
    old = LedgerLog(other).open()
    gen = s.log.generation
    at = s.match(old.probes(0, old.count))
    assert at.count == 180 and s.log.generation == gen  # parted at seq 180; our own bytes were never in doubt
