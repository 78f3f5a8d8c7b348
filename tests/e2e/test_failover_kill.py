"""End to end: kill -9 a primary node (worker and service) — the standby takes over, measured and recorded."""

from __future__ import annotations

import json

import pytest

from continuity.sample.client import LedgerClient
from continuity.state import keys
from tests.failover_support import Fleet, fleet_fixture  # noqa: F401 - the `fleet` fixture
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def test_kill9_primary_promotes_standby_with_recorded_timings(fleet: Fleet) -> None:
    fleet.start()
    # the bootstrapped primary gets a route (published by the failover watchdog), and clients follow it
    wait_for(lambda: json.loads(fleet.client.get(keys.route("ledger")) or "{}").get("epoch") == 1, timeout=20,
             what="a route to the bootstrapped ledger")
    client = LedgerClient(fleet.redis_url)
    for seq in range(1, 21):
        assert client.append(seq)
    fleet.wait_replicated(20)

    fleet.workers["core-a"].kill9()
    fleet.kill_service("ledger", "core-a")

    (rec,) = fleet.wait_records(1)
    assert rec["outcome"] == "succeeded", json.dumps(rec, indent=1)
    assert rec["old_primary"] == "core-a" and rec["new_primary"] == "core-b" and rec["who"] == "detector"
    assert [s["step"] for s in rec["steps"]] == ["fence", "prepare", "promote", "repoint", "verify", "record"]
    assert all(s["ok"] and s["duration"] is not None for s in rec["steps"])
    assert {s["node"] for s in rec["steps"] if s["step"] in ("prepare", "promote", "verify")} == {"core-b"}
    assert rec["detection"] is not None and rec["detection"] > 0
    assert rec["mttr"] is not None and rec["mttr"] >= rec["detection"]
    assert rec["lease_wait"] is not None and rec["lease_wait"] >= 0

    # the route moved, clients follow it, and no acknowledged record was lost
    route = json.loads(fleet.client.get(keys.route("ledger")))
    assert route["node"] == "core-b" and route["epoch"] == 2
    health = fleet.health("ledger", "core-b")
    assert health and health["epoch"] == 2 and health["records"] == 20
    assert client.append(21)
    assert client.records() == list(range(1, 22))
    files = LedgerClient(fleet.state / "routes.json")
    assert files.route()["node"] == "core-b"
    # the history has the story
    from tests.failover_support import pulse_events

    kinds = [e["kind"].removeprefix("continuity_layer.") for e in pulse_events(fleet.state)]
    for k in ("detect.node_dead", "failover.started", "failover.fenced", "failover.promoted", "failover.completed"):
        assert k in kinds, k
    wait_for(lambda: fleet.lease("ledger") and fleet.lease("ledger").node == "core-b", timeout=10,
             what="core-b's agent to hold the lease")
    from tests.failover_support import overlaps, role_intervals

    assert overlaps(role_intervals(pulse_events(fleet.state), "ledger")) == []
