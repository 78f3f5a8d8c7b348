"""End to end: a role's lease key vanishes under a running fleet — its live holder takes it back, same epoch.

Redis can lose a key (a restart without AOF, an operator's DEL): the primary is still running
and renewing, so nobody is dead and no failover would ever start. Its agent re-creates the lease
at the epoch it holds, no failover starts and no second holder appears.
"""

from __future__ import annotations

import pytest

from continuity.state import keys
from tests.failover_support import Fleet, fleet_fixture, overlaps, pulse_events, role_intervals  # noqa: F401
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def test_deleted_lease_is_retaken_by_its_holder_at_the_same_epoch(fleet: Fleet) -> None:
    fleet.start()
    assert fleet.client.delete(keys.lease("ledger")) == 1
    (ev,) = wait_for(lambda: pulse_events(fleet.state, "detect.lease_retaken") or None, timeout=20,
                     what="the lease to be taken back")
    assert ev["node"] == "core-a" and ev["epoch"] == 1 and ev["service"] == "ledger"
    lease = fleet.lease("ledger")
    assert lease is not None and lease.node == "core-a" and lease.epoch == 1
    assert int(fleet.client.get(keys.epoch("ledger"))) == 1, "no fence: the role never moved"
    # the sample instance watches its own lease and may have stopped itself in the gap (it saw no lease);
    # then the agent's local recovery starts it again at the same epoch. Either way it serves epoch 1.
    fleet.wait_primary("ledger", "core-a", epoch=1)
    if pulse_events(fleet.state, "failover.service_demoted"):
        # the restart event is written when the start hook returns, which is after the instance answers (its
        # readiness is what the hook waits for): wait for the event, do not race it
        (restart,) = wait_for(lambda: pulse_events(fleet.state, "failover.service_restarted") or None, timeout=20,
                              what="the local restart to be recorded")
        assert restart["node"] == "core-a" and restart["epoch"] == 1
    assert fleet.records() == [], "no failover was started"
    kinds = {e["kind"].removeprefix("continuity_layer.") for e in pulse_events(fleet.state)}
    assert not kinds & {"failover.started", "failover.self_demoted", "failover.service_failed"}
    assert overlaps(role_intervals(pulse_events(fleet.state), "ledger")) == []
