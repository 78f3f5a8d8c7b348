"""End to end: the primary's node is frozen (SIGSTOP: cut off) and later thawed — never two primaries."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from continuity.state import keys
from tests.failover_support import Fleet, fleet_fixture, overlaps, pulse_events, role_intervals  # noqa: F401
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def _first(state, kind: str, node: str, epoch: int) -> dict:
    evs = [e for e in pulse_events(state, kind) if e["node"] == node and e["epoch"] == epoch]
    assert evs, f"no {kind} event for {node} epoch {epoch}"
    return evs[0]


def test_cut_off_primary_demotes_itself_before_the_standby_is_promoted(fleet: Fleet) -> None:
    fleet.start()
    for seq in range(1, 11):
        assert fleet.post("ledger", "core-a", seq) == 200
    fleet.wait_replicated(10)

    fleet.workers["core-a"].signal(signal.SIGSTOP)  # the worker and its agent freeze; the service keeps running
    try:
        (rec,) = fleet.wait_records(1)
        assert rec["outcome"] == "succeeded" and rec["new_primary"] == "core-b", json.dumps(rec, indent=1)
        health = fleet.wait_primary("ledger", "core-b", epoch=2)
        assert health["records"] == 10

        # the old instance stopped on its own when its lease ran out — before the standby was promoted
        demoted = _first(fleet.state, "failover.service_demoted", "core-a", 1)
        promoted = _first(fleet.state, "failover.promoted", "core-b", 2)
        (fenced,) = [e for e in pulse_events(fleet.state, "failover.fenced") if e["epoch"] == 2]
        assert demoted["ts"] < fenced["ts"] < promoted["ts"]
        assert fleet.post("ledger", "core-a", 11) in (0, 409)

        # a stale instance that did not notice (lease watch off) is refused by the epoch check: 409, nothing written
        port = fleet.port("ledger", "core-a")
        env = {**fleet.env, "CONTINUITY_SAMPLE_LEASE_WATCH": "0"}
        subprocess.run([sys.executable, "-m", "continuity.sample.ledger_service", "start", "--service", "ledger",
                        "--node", "core-a", "--port", str(port), "--epoch", "1"], env=env, check=True, timeout=30)
        assert fleet.post("ledger", "core-a", 11) == 409
        assert fleet.health("ledger", "core-a")["records"] == 10
        subprocess.run([sys.executable, "-m", "continuity.sample.ledger_service", "stop", "--service", "ledger",
                        "--node", "core-a"], env=env, check=True, timeout=30)
    finally:
        fleet.workers["core-a"].signal(signal.SIGCONT)

    # thawed, core-a's agent finds its lease gone and demotes locally; it does not take the role back
    wait_for(lambda: [e for e in pulse_events(fleet.state, "failover.self_demoted")
                      if e["node"] == "core-a" and e["epoch"] == 1], timeout=30, what="core-a's agent to demote")
    lease = fleet.lease("ledger")
    assert lease.node == "core-b" and lease.epoch == 2
    assert json.loads(fleet.client.get(keys.route("ledger")))["node"] == "core-b"
    assert fleet.post("ledger", "core-b", 11) == 200

    # from the pulse history: at no instant did two nodes hold the role with a valid epoch
    intervals = role_intervals(pulse_events(fleet.state), "ledger")
    assert {(n, e) for n, e, _, _ in intervals} >= {("core-a", 1), ("core-b", 2)}
    assert overlaps(intervals) == []
