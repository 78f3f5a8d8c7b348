"""End to end: a forced failover while the old primary is in fact alive gives up instead of making two primaries."""

from __future__ import annotations

import json

import pytest

from continuity.state import keys
from tests.failover_support import Fleet, fleet_fixture, overlaps, pulse_events, role_intervals  # noqa: F401
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


def test_forced_failover_against_a_live_primary_is_superseded(fleet: Fleet) -> None:
    fleet.start()
    assert run_cli("failover", "pause", "ledger", env=fleet.env).returncode == 0
    r = run_cli("failover", "failover", "ledger", "--to", "core-b", "--force", "--json", env=fleet.env, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    rec = json.loads(r.stdout)
    assert rec["outcome"] == "superseded" and "keeps renewing its lease" in rec["finish_detail"]["reason"]
    assert "outcome superseded" in r.stderr
    # nothing moved: same holder, same epoch, its writes still accepted
    lease = fleet.lease("ledger")
    assert (lease.node, lease.epoch) == ("core-a", 1)
    assert int(fleet.client.get(keys.epoch("ledger"))) == 1
    assert fleet.post("ledger", "core-a", 1) == 200
    assert not [e for e in pulse_events(fleet.state, "failover.promoted")]
    assert overlaps(role_intervals(pulse_events(fleet.state), "ledger")) == []
