"""End to end: kill -9 the standby's worker while the failover to it is in progress; the next candidate serves.

Three candidates for the ledger (core-a primary, core-b then core-c standbys). core-a's node dies,
the chain picks core-b, and its promote's start hook is held at a gate (``tests.failover_gatehook``)
so the kill lands mid-failover, deterministically. Then core-b's worker is killed with kill -9 (its
whole process group: the hook dies too). The chain must notice its candidate is gone from the
candidate's heartbeat — not wait out a watchdog's give-up time — and core-c must serve with a new epoch.

What shows the mechanism is the reason the chain moved on ("candidate core-b is dead", from the detector's
view), not a stopwatch: the time is printed, and bounded only far below the watchdog's give-up time
(:data:`continuity.failover.watchdog.GIVE_UP_AFTER`) with a margin that holds on a saturated machine
(idle, it is 4-6 s; the issue measured 19-25 s and one outage of 40 s before).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.failover_support import Fleet, pulse_events
from tests.helpers import wait_for

pytestmark = pytest.mark.slow
BUDGET = 30.0  # seconds from the standby's kill to the next candidate serving: well below GIVE_UP_AFTER (45 s)


@pytest.fixture
def gated(tmp_path: Path, state_dir: Path, redis_url: str, spawn, start_worker) -> Iterator[Fleet]:
    gate = tmp_path / "gate"
    gate.mkdir()
    prefix = ["{python}", "-m", "tests.failover_gatehook", str(gate), "{node}", "{epoch}", "--"]
    f = Fleet(tmp_path, state_dir, redis_url, spawn, start_worker, start_prefix=prefix, third_node=True)
    f.gate = gate  # type: ignore[attr-defined]
    try:
        yield f
    finally:
        for p in gate.glob("hold-*"):
            p.unlink()
        f.close()


def test_killing_the_candidate_mid_failover_moves_on_to_the_next_once_it_is_seen_dead(gated: Fleet) -> None:
    fleet, gate = gated, gated.gate  # type: ignore[attr-defined]
    fleet.start(nodes=("core-a", "core-b", "core-c"))
    (gate / "hold-core-b-2").touch()  # core-b's promote (epoch 2) will stop inside its start hook
    fleet.workers["core-a"].kill9()
    fleet.kill_service("ledger", "core-a")
    wait_for(lambda: list(gate.glob("reached-core-b-2-*")), timeout=60, what="core-b's promote to reach the gate")
    t_kill = time.time()
    fleet.workers["core-b"].kill9()
    health = fleet.wait_primary("ledger", "core-c", timeout=60)
    served = time.time() - t_kill
    print(f"core-c served {served:.2f}s after the kill")
    (rec,) = fleet.wait_records(1)
    assert rec["outcome"] == "succeeded" and rec["new_primary"] == "core-c", json.dumps(rec, indent=1)
    assert [a["candidate"] for a in rec["attempts"]] == ["core-b", "core-c"]
    assert health["epoch"] == 3, "core-b's epoch 2 is fenced: core-c serves a newer one"
    assert fleet.post("ledger", "core-c", 1) == 200, "the new primary acknowledges writes"
    retry = [e for e in pulse_events(fleet.state, "failover.retry") if e["data"].get("next") == "core-c"]
    assert retry, "the move to core-c is recorded"
    assert retry[0]["data"]["error"] == "candidate core-b is dead", retry[0]["data"]
    assert served <= BUDGET, f"core-c served {served:.1f}s after core-b's worker was killed (budget {BUDGET:g}s)"
