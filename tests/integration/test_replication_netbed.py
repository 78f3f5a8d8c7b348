"""Ledger replication between separate hosts (the bed): steady writers, kill -9, partitions, sync mode.

Each node runs its own replicator on its own root, in its own network namespace;
the bed fails any test in which a node opens another node's root. The test
itself (the bed's root namespace) reads every copy to compare them.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from continuity.netbed import Bed
from continuity.state import replication as st
from continuity.state.replication import Applied, StandbyLag
from tests.helpers import wait_for
from tests.netbed import bed_blueprint, make_bed_fixture, netbed_session_fixture  # noqa: F401 - fixtures
from tests.replication_support import ReplicationBed, Writer, ledger_path, seqs, with_replication

STANDBYS = ("core-b", "core-c")
LEDGER = "ledger.jsonl"


def _caught_up(rb: ReplicationBed, nodes: tuple[str, ...] = STANDBYS) -> bool:
    primary = ledger_path(rb.bed, rb.primary).read_bytes()
    return all(ledger_path(rb.bed, n).read_bytes() == primary for n in nodes)


def test_a_steady_writers_ledger_reaches_every_standby_byte_for_byte_and_lag_is_published(make_bed,
                                                                                           tmp_path: Path) -> None:
    bed = make_bed(bed_blueprint(tmp_path))
    rb = ReplicationBed(bed)
    try:
        writer = Writer(rb.start(), rate=200).start()
        writer.wait_acked(400)
        writer.stop()
        wait_for(lambda: _caught_up(rb), timeout=30, what="both standbys holding the primary's ledger")
        total = len(writer.acked())
        assert seqs(ledger_path(bed, "core-b")) == writer.acked()

        def published() -> tuple[list[StandbyLag], list[Applied]] | None:
            lags = [lag for lag in st.read_lags(rb.client, ["ledger"]).get("ledger", []) if lag.source == LEDGER]
            applied = [a for a in st.read_applied(rb.client, ["ledger"]).get("ledger", []) if a.source == LEDGER]
            done = (sorted(lag.standby for lag in lags if lag.acked_count == total) == list(STANDBYS)
                    and sorted(a.node for a in applied if a.count == total) == list(STANDBYS))
            return (lags, applied) if done else None

        lags, applied = wait_for(published, timeout=20, what="every standby's position published, by both ends")
        assert all(lag.primary == "core-a" and lag.epoch == 1 and lag.state == "streaming" and lag.lag_records == 0
                   and lag.lag_seconds == 0 and lag.end_count == total for lag in lags)
        assert all(a.primary == "core-a" and a.epoch == 1 and a.last_seq == writer.acked()[-1] for a in applied)
        quiet = time.time()  # nothing is written any more: the primary's keepalives still say "you hold it all"

        def synced_since_quiet() -> bool:
            found = [a for a in st.read_applied(rb.client, ["ledger"]).get("ledger", []) if a.source == LEDGER]
            return sorted(a.node for a in found if a.synced is not None and a.synced > quiet) == list(STANDBYS)

        wait_for(synced_since_quiet, timeout=20, what="each standby's synced time moving on keepalives")
    finally:
        rb.close()


def test_a_replicator_killed_mid_stream_resumes_from_its_position_without_a_full_copy(make_bed,
                                                                                     tmp_path: Path) -> None:
    bed = make_bed(bed_blueprint(tmp_path))
    rb = ReplicationBed(bed)
    try:
        writer = Writer(rb.start(), rate=200).start()
        copy = ledger_path(bed, "core-b")
        wait_for(lambda: len(seqs(copy)) >= 300, timeout=60, what="core-b holding 300 records")
        inode = os.stat(copy).st_ino
        rb.procs["core-b"].send_signal(signal.SIGKILL)  # mid-stream: the writer keeps going
        rb.procs["core-b"].wait(10)
        held = len(seqs(copy))
        time.sleep(1.0)
        assert len(seqs(copy)) == held  # nothing applied while it is down
        rb.start_replicator("core-b")
        writer.wait_acked(len(writer.acked()) + 200)
        writer.stop()
        wait_for(lambda: _caught_up(rb), timeout=30, what="core-b caught up after its replicator's restart")
        assert os.stat(copy).st_ino == inode, "the copy was replaced: a full copy, not a resume"
        resumed = [e["data"] for e in rb.events("replication.resumed") if e["data"]["standby"] == "core-b"
                   and e["data"]["source"] == "ledger.jsonl"]
        assert len(resumed) >= 2
        first_after = resumed[-1]
        assert first_after["full_copy"] is False and first_after["count"] >= held > 0, first_after
        assert seqs(copy) == writer.acked()
    finally:
        rb.close()


def test_a_partitioned_standby_resumes_where_it_stopped_when_healed(make_bed, tmp_path: Path) -> None:
    bed = make_bed(bed_blueprint(tmp_path))
    rb = ReplicationBed(bed)
    try:
        writer = Writer(rb.start(), rate=200).start()
        copy = ledger_path(bed, "core-c")
        wait_for(lambda: len(seqs(copy)) >= 200, timeout=60, what="core-c holding 200 records")
        inode = os.stat(copy).st_ino
        bed.partition("core-c")
        time.sleep(0.5)
        held = len(seqs(copy))
        time.sleep(7.0)  # longer than a link may stay silent (5 s): both ends drop the connection
        assert len(seqs(copy)) == held, "data reached a partitioned node"
        assert len(writer.acked()) > held + 200  # the primary went on without it
        bed.heal("core-c")
        writer.wait_acked(len(writer.acked()) + 100)
        writer.stop()
        wait_for(lambda: _caught_up(rb), timeout=60, what="core-c caught up after the heal")
        assert os.stat(copy).st_ino == inode
        resumed = [e["data"] for e in rb.events("replication.resumed") if e["data"]["standby"] == "core-c"
                   and e["data"]["source"] == "ledger.jsonl"]
        assert resumed[-1]["session"] >= 2, resumed  # a new session, after the old connection was dropped
        assert resumed[-1]["full_copy"] is False and resumed[-1]["count"] >= held, resumed
        assert seqs(copy) == writer.acked()
    finally:
        rb.close()


def sync_bed(make_bed: Any, tmp_path: Path, policy: str) -> tuple[Bed, ReplicationBed, Writer]:
    """A bed whose ledger is in sync mode (one standby, ``policy``), a steady writer, 100 writes acknowledged."""
    bed = make_bed(with_replication(bed_blueprint(tmp_path), mode="sync", standbys=1, on_no_standby=policy,
                                    timeout="1s"))
    rb = ReplicationBed(bed)
    writer = Writer(rb.start(), rate=100).start()
    writer.wait_acked(100)
    return bed, rb, writer


def test_sync_mode_acknowledges_no_write_that_is_not_on_a_standby(make_bed, tmp_path: Path) -> None:
    """Standbys cut off, then the primary lost: every acknowledged write is on a surviving standby."""
    bed, rb, writer = sync_bed(make_bed, tmp_path, "refuse")
    try:
        assert all(body.get("replication") == "sync" for code, body in writer.results.values() if code == 200)
        for n in STANDBYS:
            bed.partition(n)
        time.sleep(3.0)  # writes go on meanwhile: none of them may be acknowledged
        bed.lose("core-a")
        writer.stop()
        for n in STANDBYS:
            bed.heal(n)
        acked = set(writer.acked())
        held = set(seqs(ledger_path(bed, "core-b"))) | set(seqs(ledger_path(bed, "core-c")))
        assert acked <= held, f"acknowledged but on no standby: {sorted(acked - held)[:20]}"
        refused = writer.with_status(503)
        assert refused and all(writer.results[s][1].get("stored") is True for s in refused)
    finally:
        rb.close()


def test_sync_mode_with_degrade_acknowledges_alone_says_so_and_recovers(make_bed, tmp_path: Path) -> None:
    bed, rb, writer = sync_bed(make_bed, tmp_path, "degrade")
    try:
        for n in STANDBYS:
            bed.partition(n)
        wait_for(lambda: [s for s, (c, b) in writer.results.items() if c == 200 and b.get("replication") ==
                          "degraded"], timeout=30, what="a write acknowledged as degraded")
        wait_for(lambda: rb.events("replication.degraded"), timeout=10, what="replication.degraded recorded")
        for n in STANDBYS:
            bed.heal(n)
        wait_for(lambda: rb.events("replication.sync_restored"), timeout=60, what="sync restored after the heal")
        mark = writer.next
        writer.wait_acked(len(writer.acked()) + 50)
        writer.stop()
        later = [b.get("replication") for s, (c, b) in writer.results.items() if s > mark + 5 and c == 200]
        assert later and set(later) == {"sync"}
        assert not writer.with_status(503)
    finally:
        rb.close()
