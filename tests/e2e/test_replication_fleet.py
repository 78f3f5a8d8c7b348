"""The sample fleet on separate hosts replicates its ledger by itself: each worker runs its node's replicator.

Real workers (with their node agents and replicator bootsteps) on three hosts, beat in the root namespace, a
steady writer over the network. The replicator is its worker's child: killed alone it is restarted and resumes
where it was; gone with its worker, it comes back with the worker. `continuity status` shows each standby's lag.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from continuity.netbed import Bed
from tests.helpers import ROOT, wait_for
from tests.netbed import BedFleet, bed_blueprint, make_bed_fixture, netbed_session_fixture  # noqa: F401 - fixtures
from tests.replication_support import ReplicationBed, Writer, ledger_path, seqs

NODES = ("core-a", "core-b", "core-c")


def replicator_pids(bed: Bed, node: str) -> set[int]:
    out = set()
    for pid in bed.pids(node):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"continuity.replication" in cmd:
            out.add(pid)
    return out


def status(bed: Bed) -> dict:
    res = subprocess.run([sys.executable, "-m", "continuity", "status", "--json"], env=bed.env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_workers_run_their_replicators_which_survive_kills_and_show_their_lag(make_bed, tmp_path: Path) -> None:
    bed = make_bed(bed_blueprint(tmp_path))
    fleet = BedFleet(bed)
    rb = ReplicationBed(bed)
    try:
        fleet.start(NODES)
        fleet.wait_primary("ledger", "core-a")
        host = fleet.url("ledger", "core-a").removeprefix("http://")
        writer = Writer(host, rate=100).start()
        for n in ("core-b", "core-c"):
            wait_for(lambda n=n: len(seqs(ledger_path(bed, n))) >= 100, timeout=60, what=f"{n} holding 100 records")
        rows = wait_for(lambda: [r for r in status(bed)["replication"] if r["source"] == "ledger.jsonl"
                                 and r["state"] == "streaming"], timeout=30, what="lag in `continuity status`")
        assert {r["standby"] for r in rows} == {"core-b", "core-c"} and all(r["from"] == "core-a" for r in rows)
        assert {s["id"]: s for s in status(bed)["services"]}["ledger"]["replication"] == "async"

        # the replicator alone, killed -9: its worker starts another, which resumes
        (old,) = replicator_pids(bed, "core-b")
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: replicator_pids(bed, "core-b") - {old}, timeout=30, what="core-b's replicator restarted")
        mark = len(writer.acked())
        wait_for(lambda: len(seqs(ledger_path(bed, "core-b"))) > mark, timeout=30, what="core-b applying again")
        resumed = [e["data"] for e in rb.events("replication.resumed") if e["data"]["standby"] == "core-b"
                   and e["data"]["source"] == "ledger.jsonl"]
        assert resumed[-1]["full_copy"] is False and resumed[-1]["count"] > 0

        # the worker killed -9: its replicator goes with it, and comes back with the next worker
        (rep_c,) = replicator_pids(bed, "core-c")
        fleet.workers["core-c"].send_signal(signal.SIGKILL)
        wait_for(lambda: rep_c not in replicator_pids(bed, "core-c"), timeout=30,
                 what="core-c's replicator gone with its worker")
        fleet.workers["core-c"] = bed.start_worker("core-c")
        wait_for(lambda: replicator_pids(bed, "core-c"), timeout=60, what="core-c's replicator back")
        writer.stop()
        primary = ledger_path(bed, "core-a")
        for n in ("core-b", "core-c"):
            wait_for(lambda n=n: ledger_path(bed, n).read_bytes() == primary.read_bytes(), timeout=60,
                     what=f"{n} holding the primary's ledger")
        assert seqs(ledger_path(bed, "core-c")) == writer.acked()
    finally:
        rb.close()
        fleet.close()
