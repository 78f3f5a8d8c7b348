"""The sample fleet on separate hosts: three nodes, each in its own network namespace with its own data root.

Real workers on their hosts, beat and Redis in the root namespace, the ledger
reached over its node's address. A node loss (every process killed -9 and its
root gone at once) is declared dead by the detector and the ledger moves on;
and at the end no node has opened another node's root (the bed fixture checks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from continuity.failover import records
from continuity.pulse import PREFIX
from continuity.state import leases, pulse_stream
from continuity.state import replication as replication_state
from tests.helpers import wait_for
from tests.netbed import BedFleet, bed_blueprint, make_bed_fixture, netbed_session_fixture  # noqa: F401 - fixtures
from tests.replication_support import ledger_path, seqs

NODES = ("core-a", "core-b", "core-c")
T = TypeVar("T")


def test_three_hosts_beat_serve_over_their_addresses_and_a_lost_node_is_declared_dead(make_bed,
                                                                                        tmp_path: Path) -> None:
    bed = make_bed(bed_blueprint(tmp_path))
    fleet = BedFleet(bed)
    try:
        fleet.start(NODES)
        wait_for(lambda: fleet.states() == dict.fromkeys(NODES, "alive"), timeout=60,
                 what="the detector seeing all three hosts alive")
        health = fleet.wait_primary("ledger", "core-a")  # bootstrapped there, answering on core-a's address
        assert fleet.url("ledger", "core-a").startswith(f"http://{bed.host('core-a').address}:")
        assert health["pid"] in bed.pids("core-a"), "the ledger does not run on core-a's host"
        assert fleet.post("ledger", "core-a", 1) == 200  # its epoch check reached Redis over the bridge
        data = bed.host("core-a").root / "nodes" / "core-a" / "ledger" / "ledger.jsonl"
        assert data.read_text().count("\n") == 1  # on core-a's own root

        loss = bed.lose("core-a")
        assert {health["pid"], fleet.workers["core-a"].pid} <= set(loss.pids)
        assert bed.pids("core-a") == set() and not bed.host("core-a").root.exists()
        wait_for(lambda: fleet.states().get("core-a") == "dead", timeout=60, what="core-a declared dead")
        assert fleet.states()["core-b"] == fleet.states()["core-c"] == "alive"
        # the standby takes over, and answers on its own address (its data: what survived, here nothing)
        moved = fleet.wait_primary("ledger", "core-b", timeout=90)
        assert moved["pid"] in bed.pids("core-b") and moved["epoch"] > health["epoch"]
    finally:
        fleet.close()


def test_a_failover_away_from_a_partitioned_primary_opens_nothing_of_its_root(make_bed, tmp_path: Path) -> None:
    bed = make_bed(bed_blueprint(tmp_path))
    fleet = BedFleet(bed)
    try:
        fleet.start(NODES)
        fleet.wait_primary("ledger", "core-a")
        assert fleet.post("ledger", "core-a", 1) == 200
        wait_for(lambda: 1 in seqs(ledger_path(bed, "core-b")), timeout=30, what="seq 1 replicated to core-b")
        wait_for(lambda: (c := replication_state.read_committed(fleet.client, ["ledger"]).get("ledger", {})
                          .get("ledger.jsonl")) is not None and c.count >= 1, timeout=30,
                 what="the committed position at 1 record")
        bed.partition("core-a")  # alive, with its disk, but cut off: its root must still be out of reach
        health = fleet.wait_primary("ledger", "core-b", timeout=90)
        assert health["records"] == 1
        rec = wait_for(lambda: next((r for r in records.history(fleet.client, service="ledger")
                                     if r["outcome"] == "succeeded"), None), timeout=30, what="the failover record")
        (prep,) = [st for st in rec["steps"] if st["step"] == "prepare"]
        # the record says where the new epoch's data came from and what that lost: its own replica, nothing
        assert prep["source"] == "replica" and prep["starts_from"] == {"records": 1, "last_seq": 1}, prep
        assert prep["committed"]["records"] == 1 and (prep["loss_records"], prep["loss_seconds"]) == (0, 0.0)
    finally:
        fleet.close()
    bed.assert_isolated()


def poll(cond: Callable[[], T | None], timeout: float, what: str) -> T:
    """Like ``wait_for``, but an assertion inside ``cond`` fails at once (what it saw is the verdict)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Watch:
    """Polls a node's ledger instance over its address while a test runs: every answer it gave, with its epoch
    and record count (what a client routed to it would have been served)."""

    def __init__(self, fleet: BedFleet, node: str, period: float = 0.05) -> None:
        self.fleet, self.node, self.period = fleet, node, period
        self.seen: list[tuple[int, int]] = []  # (epoch, records)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            h = self.fleet.health("ledger", self.node)
            if h is not None:
                self.seen.append((int(h.get("epoch") or 0), int(h.get("records") or 0)))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_replaced_machine_back_at_once_on_an_empty_disk_takes_no_role_until_caught_up(make_bed,
                                                                                         tmp_path: Path) -> None:
    """Issue 10 item 5: core-a is lost (kill -9 of everything, root gone) and its worker is back at once on an
    empty root, while the lease may still name it. It must not serve the ledger from nothing (reclaim, restart
    in place, renew the old lease): it gives the role up, the ledger moves to a standby that holds every
    acknowledged write, and core-a catches up as a standby."""
    bed = make_bed(bed_blueprint(tmp_path))
    fleet = BedFleet(bed)
    try:
        fleet.start(NODES)
        wait_for(lambda: fleet.states() == dict.fromkeys(NODES, "alive"), timeout=60,
                 what="the detector seeing all three hosts alive")
        first = fleet.wait_primary("ledger", "core-a")
        acked = [s for s in range(1, 41) if fleet.post("ledger", "core-a", s) == 200]
        assert len(acked) == 40
        # async replication: wait until both standbys hold every write, so what is tested is the replaced
        # machine, not the last milliseconds of async lag; and until the layer has committed them
        wait_for(lambda: all(set(acked) <= set(seqs(ledger_path(bed, n))) for n in ("core-b", "core-c")),
                 timeout=30, what="both standbys holding every acknowledged write")
        wait_for(lambda: (c := replication_state.read_committed(fleet.client, ["ledger"]).get("ledger", {})
                          .get("ledger.jsonl")) is not None and c.count >= 40,
                 timeout=30, what="the committed position at 40 records")

        with Watch(fleet, "core-a") as watch:
            t0 = time.monotonic()
            bed.lose("core-a")
            bed.revive("core-a")
            fleet.workers["core-a"] = bed.start_worker("core-a")  # the replaced machine, back at once
            def moved() -> leases.Lease | None:
                short = [s for s in watch.seen if s[1] < len(acked)]
                assert not short, f"core-a served less than acknowledged (epoch, records): {short[:5]}"
                ls = leases.read(fleet.client, "ledger")
                return ls if ls is not None and ls.node != "core-a" and ls.epoch > first["epoch"] else None

            lease = poll(moved, timeout=90, what="the ledger's role on another node, at a new epoch")
            serving = fleet.wait_primary("ledger", lease.node, timeout=60)
            moved_at = time.monotonic() - t0
            # core-a, now a standby, catches up from the new primary
            wait_for(lambda: set(acked) <= set(seqs(ledger_path(bed, "core-a"))), timeout=60,
                     what="core-a caught up as a standby")
            caught_up_at = time.monotonic() - t0
        gave_up = [e for _, e in pulse_stream.newest(fleet.client, 2000)
                   if e.get("kind") == PREFIX + "failover.service_failed" and e.get("node") == "core-a"]
        print(f"\nreplaced machine: role on {lease.node} (epoch {lease.epoch}) {moved_at:.1f}s after the loss, "
              f"core-a caught up as a standby at {caught_up_at:.1f}s; core-a gave the role up itself: "
              f"{[e['data'].get('reason') for e in gave_up] or 'no (declared dead first)'}")
        assert serving["records"] >= len(acked)
        assert set(acked) <= set(seqs(ledger_path(bed, lease.node))), "an acknowledged write is missing"
        assert not [s for s in watch.seen if s[1] < len(acked)], f"core-a served less than acknowledged: {watch.seen}"
        assert leases.read(fleet.client, "ledger").node == lease.node
    finally:
        fleet.close()


def test_a_primary_partitioned_for_10s_rejoins_with_its_unreplicated_tail_kept_aside(make_bed,
                                                                                     tmp_path: Path) -> None:
    """Issue 10, partition acceptance: the primary's link goes down for 10 s and comes back. Its replicator was
    frozen for the last writes it acknowledged (async mode), so it holds a tail no standby has. The ledger moves
    to a standby at a new epoch; once healed, core-a serves nothing (its role is gone), its replicator follows
    the new primary from where the histories parted (no full copy), and the tail is kept aside and reported,
    never merged."""
    import os
    import signal

    import psutil

    bed = make_bed(bed_blueprint(tmp_path))
    fleet = BedFleet(bed)
    try:
        fleet.start(NODES)
        first = fleet.wait_primary("ledger", "core-a")
        assert [fleet.post("ledger", "core-a", s) for s in range(1, 21)] == [200] * 20
        for sb in ("core-b", "core-c"):
            wait_for(lambda sb=sb: set(range(1, 21)) <= set(seqs(ledger_path(bed, sb))), timeout=30,
                     what=f"{sb} holding seqs 1-20")
        replicator = next(p for p in bed.pids("core-a")
                          if "continuity.replication" in " ".join(psutil.Process(p).cmdline()))
        os.kill(replicator, signal.SIGSTOP)  # what core-a acknowledges from now on reaches no standby
        try:
            assert [fleet.post("ledger", "core-a", s) for s in range(21, 26)] == [200] * 5  # async: acknowledged
            bed.partition("core-a")
            t_cut = time.monotonic()
            try:
                lease = poll(lambda: (ls := leases.read(fleet.client, "ledger")) is not None
                             and ls.node != "core-a" and ls.epoch > first["epoch"] and ls, timeout=90,
                             what="the ledger on a standby at a new epoch")
                new = lease.node
                fleet.wait_primary("ledger", new, timeout=60)
                assert fleet.post("ledger", new, 26) == 200
                time.sleep(max(0.0, 10.0 - (time.monotonic() - t_cut)))  # the fault: 10 s without a link
            finally:
                bed.heal("core-a")
        finally:
            os.kill(replicator, signal.SIGCONT)
        # healed: core-a holds no role and serves no write; it follows the new primary as a standby
        wait_for(lambda: fleet.post("ledger", "core-a", 27) != 200 and 26 in set(seqs(ledger_path(bed, "core-a"))),
                 timeout=60, what="core-a refusing writes and following the new primary")
        assert leases.read(fleet.client, "ledger").node == new
        held = seqs(ledger_path(bed, "core-a"))
        assert set(held) >= set(range(1, 21)) | {26} and not set(held) & set(range(21, 26)), held

        def replication_events(kind: str) -> list[dict]:
            return [e for _, e in pulse_stream.newest(fleet.client, 5000)
                    if e.get("kind") == PREFIX + kind and e["data"].get("standby") == "core-a"
                    and e["data"].get("source") == "ledger.jsonl"]

        # the replicator's events reach the stream through its pulse sink's queue: a moment after the bytes
        diverged = wait_for(lambda: replication_events("replication.diverged"), timeout=30,
                            what="core-a's replicator reporting the tail it kept aside")
        assert diverged[0]["data"]["records"] == 5 and diverged[0]["data"]["at"] == 20, diverged
        assert seqs(Path(diverged[0]["data"]["kept"])) == list(range(21, 26)), "the tail, kept aside whole"
        resumed = wait_for(lambda: [e for e in replication_events("replication.resumed")
                                    if e["data"].get("primary") == new], timeout=30,
                           what="core-a resuming from the new primary")
        assert not resumed[0]["data"]["full_copy"] and resumed[0]["data"]["count"] >= 20, resumed
    finally:
        fleet.close()
