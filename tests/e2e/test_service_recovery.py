"""End to end: a service that dies on a node that stays alive — restarted in place, then failed over.

The node's worker keeps beating all along, so the detector never sees a dead node: only the
agent's local recovery (restart, then give the role up) and the sweep's service-failed trigger
bring the service back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from continuity.state import keys
from tests.failover_support import Fleet, overlaps, pulse_events, role_intervals, service_pid
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(tmp_path: Path, state_dir: Path, redis_url: str, spawn, start_worker):
    gate = tmp_path / "gate"
    gate.mkdir()
    prefix = ["{python}", "-m", "tests.failover_gatehook", str(gate), "{node}", "{epoch}", "--"]
    f = Fleet(tmp_path, state_dir, redis_url, spawn, start_worker, start_prefix=prefix,
              restart_after_failures="2", max_local_restarts="2", restart_window="60s")
    f.gate = gate  # type: ignore[attr-defined]
    try:
        yield f
    finally:
        f.close()


def _kinds(fleet: Fleet, suffix: str) -> list[dict]:
    return pulse_events(fleet.state, suffix)


def test_crashed_service_is_restarted_in_place_then_failed_over_when_restarts_fail(fleet: Fleet) -> None:
    fleet.start()
    wait_for(lambda: json.loads(fleet.client.get(keys.route("ledger")) or "{}").get("epoch") == 1, timeout=20,
             what="a route to the bootstrapped ledger")
    for seq in range(1, 6):
        assert fleet.post("ledger", "core-a", seq) == 200

    # 1. kill -9 only the service: the worker on core-a lives on and restarts it, same epoch, no failover
    old_pid = service_pid(fleet.state, "core-a", "ledger")
    killed_at = time.time()
    fleet.kill_service("ledger", "core-a")
    (restart,) = wait_for(lambda: _kinds(fleet, "failover.service_restarted") or None, timeout=20,
                          what="a local restart of the ledger")
    assert restart["node"] == "core-a" and restart["epoch"] == 1 and restart["data"]["hook_rc"] == 0
    health = fleet.wait_primary("ledger", "core-a", epoch=1, timeout=20)
    assert health["pid"] != old_pid and health["records"] == 5, "same data, same epoch, a new process"
    local_mttr = restart["ts"] - killed_at
    assert fleet.records() == [] and fleet.lease("ledger").epoch == 1
    assert fleet.client.get(keys.service_failed("ledger")) is None
    # the agent's own probes see the ledger healthy again. (Whether a sweep happened to run inside the
    # ~1 s gap and flip the mode to critical is timing, not behaviour: that the mode follows an unhealthy
    # service is checked deterministically in tests/unit/test_detector_sweep.py.)
    wait_for(lambda: json.loads(fleet.client.get(keys.mode()) or "{}").get("mode") == "normal", timeout=20,
             what="the continuity mode back to normal")

    # 2. the start hook now fails on core-a: after the restart budget the role is given up and moved
    fleet.wait_replicated(5)
    (fleet.gate / "fail-core-a").touch()  # type: ignore[attr-defined]
    killed_at = time.time()
    fleet.kill_service("ledger", "core-a")
    (rec,) = fleet.wait_records(1, timeout=40)
    assert rec["outcome"] == "succeeded", json.dumps(rec, indent=1)
    assert rec["trigger"]["reason"] == "service-failed" and rec["trigger"]["failed_on"] == "core-a"
    assert "local restart" in rec["trigger"]["detail"]
    assert rec["old_primary"] == "core-a" and rec["new_primary"] == "core-b" and rec["who"] == "detector"
    assert rec["lease_wait"] is not None and rec["lease_wait"] < fleet.bp.policy.lease_ttl, \
        "the lease was released: the fence did not wait it out"
    health = fleet.wait_primary("ledger", "core-b", epoch=2)
    assert health["records"] == 5, "prepare carried the data over"
    route = json.loads(fleet.client.get(keys.route("ledger")))
    assert route["node"] == "core-b" and route["epoch"] == 2
    assert fleet.client.get(keys.service_failed("ledger")) is None, "verified: the marker is cleared"
    (failed,) = _kinds(fleet, "failover.service_failed")
    assert failed["node"] == "core-a" and failed["data"]["released"] is True
    restarts = _kinds(fleet, "failover.service_restarted")
    assert len(restarts) == 2 and restarts[1]["data"]["hook_rc"] == 3
    assert fleet.post("ledger", "core-b", 6) == 200
    assert overlaps(role_intervals(pulse_events(fleet.state), "ledger")) == []
    verified = max(st["end"] for st in rec["steps"] if st["step"] == "verify" and st["ok"])
    print(f"\nservice-crash MTTR: local restart {local_mttr:.2f}s; restarts exhausted -> failover "
          f"{rec['mttr']:.2f}s from the first failed probe ({verified - killed_at:.2f}s from the kill)")
