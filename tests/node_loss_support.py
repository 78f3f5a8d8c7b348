"""Node-loss faults under a steady writer on the separate-host bed (issue 10, acceptance points 2 and 3).

One driver for the end-to-end test (a few faults per mode) and for ``bench/replication_bench.py --node-loss N``
(20 per mode). Per fault: a client writes about ``rate`` records a second to the ledger's current primary; once
every standby follows, the primary is lost (:meth:`~continuity.netbed.Bed.lose`: every process killed -9 and its
data root gone in the same instant); the fleet fails the ledger over by itself. Then three accounts of the
same loss are taken, each by a different party:

- the client's: the seqs it saw acknowledged that the new primary does not hold (read from the new primary's
  own root by the bed, which may read every root);
- the layer's: what the failover record's prepare step reports (``loss_records``, ``loss_seconds``, measured
  against the committed position);
- the survivors': acknowledged seqs that no surviving standby held at the instant of the loss (sync mode
  promises none).

The lost node then comes back on an empty root (the replaced machine) and must rejoin as a standby before the
next fault, which hits whichever node is primary by then.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from continuity.failover import records
from continuity.state import leases
from continuity.state import replication as replication_state
from tests.helpers import wait_for
from tests.netbed import BedFleet
from tests.replication_support import Writer, ledger_path, seqs

SERVICE = "ledger"
SOURCE = "ledger.jsonl"


@dataclass
class FaultResult:
    index: int
    lost: str  # the node lost (the primary at the time)
    promoted: str  # where the ledger runs after the failover
    epoch: int  # the new epoch
    acked: int  # writes the lost primary acknowledged during this fault's run
    client_lost: list[int]  # acknowledged seqs the new primary does not hold (the client's count)
    not_on_standby: list[int]  # acknowledged seqs no surviving standby held at the loss
    window: float | None  # seconds from the acknowledgement of the earliest lost write to the node being gone
    lost_suffix: bool  # the lost writes are the newest acknowledged ones (a lag window, not holes)
    mttr: float  # the loss to the new primary answering with its epoch
    prepare: dict[str, Any]  # the failover record's prepare step (source, starts_from, committed, loss)
    committed_before: dict[str, Any] | None  # the committed position read just before the loss
    record: str = ""

    @property
    def reported_records(self) -> int | None:
        return self.prepare.get("loss_records")

    @property
    def reported_seconds(self) -> float | None:
        return self.prepare.get("loss_seconds")

    def evidence(self) -> str:
        """What a mismatch between the reported and the client-counted loss needs to be explained."""
        return (f"fault {self.index}: {self.lost} lost, {self.promoted} promoted at epoch {self.epoch} "
                f"(record {self.record}); client lost {len(self.client_lost)} of {self.acked} acked "
                f"{_span(self.client_lost)}; prepare reported {self.reported_records} records / "
                f"{self.reported_seconds} s from source {self.prepare.get('source')!r}, starts_from "
                f"{self.prepare.get('starts_from')}, committed {self.prepare.get('committed')}; committed read "
                f"just before the loss {self.committed_before}; acked seqs on no standby at the loss "
                f"{_span(self.not_on_standby)}")


def _span(values: list[int]) -> str:
    if not values:
        return "[]"
    return f"[{values[0]}..{values[-1]}] ({len(values)})" if len(values) > 3 else str(values)


@dataclass
class NodeLossRun:
    """Faults one after another on a running :class:`BedFleet`; the writer's seqs continue across faults."""

    fleet: BedFleet
    rate: float = 200.0
    warmup: int = 200  # writes the primary acknowledges (and the standbys hold the first half of) before a loss
    timeout: float = 120.0
    results: list[FaultResult] = field(default_factory=list)
    next_seq: int = 1
    acked: set[int] = field(default_factory=set)
    gone: set[int] = field(default_factory=set)  # acknowledged seqs lost by earlier faults

    @property
    def bed(self) -> Any:
        return self.fleet.bed

    def primary(self) -> tuple[str, int]:
        """The ledger's primary, once it holds the lease and answers with that epoch over its address."""
        def held() -> leases.Lease | None:
            ls = leases.read(self.fleet.client, SERVICE)
            return ls if ls is not None else None

        lease = wait_for(held, timeout=self.timeout, what="a ledger lease")
        health = self.fleet.wait_primary(SERVICE, lease.node, timeout=self.timeout)
        return lease.node, int(health["epoch"])

    def standbys(self, primary: str) -> list[str]:
        sv = self.fleet.bp.services[SERVICE]
        return [n for n in (sv.primary, *sv.standbys) if n != primary]

    def fault(self) -> FaultResult:
        index = len(self.results) + 1
        node, epoch = self.primary()
        standbys = self.standbys(node)
        writer = Writer(self.fleet.url(SERVICE, node).removeprefix("http://"), rate=self.rate)
        writer.next = self.next_seq
        first = self.next_seq
        writer.start()
        try:
            writer.wait_acked(self.warmup, timeout=self.timeout)
            # every standby follows this primary (the replaced machine of the last fault too): it holds the
            # first half of this run's writes, so what a loss costs is the replication lag, not a catch-up
            mark = first + self.warmup // 2
            for sb in standbys:
                wait_for(lambda sb=sb: mark in set(seqs(ledger_path(self.bed, sb))), timeout=self.timeout,
                         what=f"{sb} following {node} (holding seq {mark})")
            committed = replication_state.read_committed(self.fleet.client, [SERVICE]).get(SERVICE, {}).get(SOURCE)
            known = {r["id"] for r in records.history(self.fleet.client, service=SERVICE)}
            t_loss = time.monotonic()
            self.bed.lose(node)
            t_gone = time.monotonic()  # an acknowledgement may still arrive after t_loss: it left before
        finally:
            writer.stop()  # its in-flight write fails (the host is gone): every answer it got is final
        self.next_seq = writer.next
        acked = writer.acked()
        self.acked.update(acked)
        held: set[int] = set()
        for sb in standbys:
            held |= set(seqs(ledger_path(self.bed, sb)))
        not_on_standby = sorted(s for s in acked if s not in held)

        def moved() -> leases.Lease | None:
            ls = leases.read(self.fleet.client, SERVICE)
            return ls if ls is not None and ls.node != node and ls.epoch > epoch else None

        try:
            lease = wait_for(moved, timeout=self.timeout, what=f"the ledger failed over away from {node}")
            self.fleet.wait_primary(SERVICE, lease.node, timeout=self.timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.fleet.explain(SERVICE)}") from None
        mttr = time.monotonic() - t_loss

        def record() -> dict[str, Any] | None:
            return next((r for r in records.history(self.fleet.client, service=SERVICE)
                         if r["id"] not in known and r.get("outcome") == "succeeded"), None)

        rec = wait_for(record, timeout=self.timeout, what=f"the failover record away from {node}")
        preps = [st for st in rec.get("steps", []) if st.get("step") == "prepare"]
        prepare = ([st for st in preps if st.get("ok")] or preps or [{}])[-1]

        on_new = set(seqs(ledger_path(self.bed, lease.node)))
        missing = {s for s in self.acked if s not in on_new}
        lost = sorted(missing - self.gone)
        self.gone |= missing
        window = None
        if lost:
            window = t_gone - min(writer.acked_at[s] for s in lost)
        survived = [s for s in acked if s not in lost]
        suffix = not lost or not survived or max(survived) < min(lost)

        # the replaced machine: back at once on an empty root, it must rejoin as a standby
        self.bed.revive(node)
        self.fleet.workers[node] = self.bed.start_worker(node)
        result = FaultResult(index, node, lease.node, lease.epoch, len(acked), lost, not_on_standby, window,
                             suffix, mttr, prepare,
                             None if committed is None else {"epoch": committed.epoch, "records": committed.count,
                                                             "last_seq": committed.last_seq,
                                                             "node": committed.node},
                             rec.get("id", ""))
        self.results.append(result)
        return result


def summary(results: list[FaultResult]) -> dict[str, Any]:
    """min / median / max of the client-counted and the reported loss per fault, and how often they agree."""
    def mmm(values: list[float]) -> tuple[float, float, float] | None:
        return (min(values), statistics.median(values), max(values)) if values else None

    client = [float(len(r.client_lost)) for r in results]
    reported = [float(r.reported_records) for r in results if r.reported_records is not None]
    windows = [r.window for r in results if r.window is not None]
    return {"faults": len(results), "client": mmm(client), "reported": mmm(reported), "window": mmm(windows),
            "agree": sum(1 for r in results if r.reported_records == len(r.client_lost)),
            "not_on_standby": sum(len(r.not_on_standby) for r in results),
            "mttr": mmm([r.mttr for r in results]), "acked": sum(r.acked for r in results)}
