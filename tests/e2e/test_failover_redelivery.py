"""End to end: the candidate's worker is killed in the middle of the chain; redelivery finishes it, effects once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.state import keys
from tests.failover_support import Fleet, pulse_events
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def gated_fleet(tmp_path: Path, state_dir: Path, redis_url: str, spawn, start_worker) -> Iterator[Fleet]:
    gate = tmp_path / "gate"
    gate.mkdir()
    prefix = ["{python}", "-m", "tests.failover_gatehook", str(gate), "{node}", "{epoch}", "--"]
    # a short visibility timeout so the broker hands the killed worker's unacked task out again within seconds
    f = Fleet(tmp_path, state_dir, redis_url, spawn, start_worker, start_prefix=prefix,
              extra_env={"CONTINUITY_VISIBILITY_TIMEOUT": "4"})
    f.gate = gate  # type: ignore[attr-defined]
    try:
        yield f
    finally:
        f.close()


def test_worker_killed_mid_promote_then_redelivered_effects_happen_once(gated_fleet: Fleet) -> None:
    fleet = gated_fleet
    gate: Path = fleet.gate  # type: ignore[attr-defined]
    (gate / "hold-core-b-2").touch()
    fleet.start()
    for seq in range(1, 8):
        assert fleet.post("ledger", "core-a", seq) == 200
    fleet.wait_replicated(7)

    fleet.workers["core-a"].kill9()
    fleet.kill_service("ledger", "core-a")
    # the promote step is running on core-b, inside its start hook: kill the whole worker there
    wait_for(lambda: list(gate.glob("reached-core-b-2-*")), timeout=30, what="promote to reach the start hook")
    fleet.workers["core-b"].kill9()
    (gate / "hold-core-b-2").unlink()
    fleet.start_worker("core-b")

    (rec,) = fleet.wait_records(1, timeout=90)
    assert rec["outcome"] == "succeeded", json.dumps(rec, indent=1)
    promote = [s for s in rec["steps"] if s["step"] == "promote"]
    assert len(promote) == 1 and promote[0]["redeliveries"] >= 1 and promote[0]["ok"]
    health = fleet.wait_primary("ledger", "core-b", epoch=2)
    assert health["records"] == 7

    # exactly once: one epoch bump, one route change, one completion, one running instance
    assert int(fleet.client.get(keys.epoch("ledger"))) == 2
    events = pulse_events(fleet.state)

    def count(kind: str) -> int:
        return sum(1 for e in events if e["kind"].endswith(kind) and e["service"] == "ledger")

    assert count("failover.fenced") == 1
    assert count("failover.completed") == 1
    assert count("failover.started") == 1
    repoints = [e for e in events if e["kind"].endswith("failover.step") and e["data"].get("step") == "repoint"
                and e["data"].get("ok") and "skipped" not in e["data"]]
    assert len(repoints) == 1
    route = json.loads(fleet.client.get(keys.route("ledger")))
    assert route["node"] == "core-b" and route["epoch"] == 2
    pids = {p.read_text() for p in fleet.state.glob("nodes/core-b/ledger/service.pid")}
    assert len(pids) == 1 and str(health["pid"]) in pids
