"""The watcher survives its own faults: kill -9 of the detector's leader, of beat, and of redis-server itself.

Real workers (each control worker runs the detector loop; one leads by a lease in Redis), a real beat, a real
redis-server with its AOF (``own_redis``: restarted on the same port), the sample ledger service. What is
measured is what the detector publishes: its sweep journal (``detector:sweeps``, Redis time) and the pulse.
Windows are generous (suspect 3 s, dead 5 s) so that a CPU hog on both cores does not make a healthy node look
dead; the assertions are the acceptance bounds (sweep gap <= 3 s after a leader or beat kill, detection back
within 5 s of Redis, zero failovers of healthy services).

``CONTINUITY_TEST_REDIS_RESTARTS`` sets how many Redis restarts the restart test makes (default 3; the
acceptance run uses 10).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from continuity.redisd import RedisServer
from continuity.state import detection, detector_leader, keys
from tests.failover_support import Fleet, pulse_events
from tests.helpers import run_cli, wait_for

pytestmark = pytest.mark.slow

POLICY = {"heartbeat_interval": "0.5s", "suspect_after": "3s", "dead_after": "5s", "lease_ttl": "6s",
          "lease_margin": "1s", "tilt_gap": "3s", "tilt_grace": "5s"}
MAX_GAP = 3.0        # acceptance: sweep gap after kill -9 of the detector leader or of beat
RESUME_WITHIN = 5.0  # acceptance: detection resumes within 5 s of Redis being back
OUTAGE = 5.0         # how long redis-server stays dead each time


@pytest.fixture
def hafleet(tmp_path: Path, state_dir: Path, own_redis: RedisServer, spawn: Any, start_worker: Any) -> Iterator[Fleet]:
    f = Fleet(tmp_path, state_dir, own_redis.url, spawn, start_worker, third_node=True, **POLICY)
    try:
        yield f
    finally:
        f.close()


def _load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def leader(fleet: Fleet) -> detector_leader.Leader | None:
    return detector_leader.read(fleet.client)


def marks(fleet: Fleet) -> list[detection.SweepMark]:
    return detection.sweeps(fleet.client)


def gaps_after(fleet: Fleet, since: float) -> list[float]:
    """Gaps between consecutive journaled sweeps from the last one before ``since`` (Redis/wall time) on."""
    ms = marks(fleet)
    ats = [m.at for m in ms]
    first = max([i for i, a in enumerate(ats) if a < since] or [0])
    return [b - a for a, b in zip(ats[first:], ats[first + 1:], strict=False)]


def all_alive(fleet: Fleet, nodes: tuple[str, ...] = ("core-a", "core-b", "core-c")) -> bool:
    states = {n: json.loads(v).get("state") for n, v in fleet.client.hgetall(keys.node_state()).items()}
    return all(states.get(n) == "alive" for n in nodes)


def settled(fleet: Fleet) -> bool:
    """Every node alive by fresh evidence: no grace holding silent nodes alive, a sweep within the last second."""
    meta = json.loads(fleet.client.get(keys.detector_meta()) or "{}")
    fresh = meta.get("last_sweep") is not None and time.time() - meta["last_sweep"] < 1.0
    return fresh and meta.get("grace_until") is None and all_alive(fleet)


def start(fleet: Fleet, first: str = "core-c") -> None:
    """``first``'s worker starts alone, so it leads the detector; then the other nodes and beat."""
    fleet.start_worker(first)
    wait_for(lambda: (ld := leader(fleet)) is not None and ld.node == first, timeout=60,
             what=f"{first} leading the detector")
    for node in ("core-a", "core-b", "core-c"):
        if node != first:
            fleet.start_worker(node)
    fleet.start_beat()
    fleet.wait_primary("ledger", "core-a", epoch=1, timeout=90)
    wait_for(lambda: all_alive(fleet), timeout=60, what="every node alive")


def test_kill9_of_the_detector_leader_a_standby_sweeps_on_within_3s(hafleet: Fleet) -> None:
    fleet = hafleet
    start(fleet, first="core-c")
    assert leader(fleet).node == "core-c"
    wait_for(lambda: len(marks(fleet)) >= 10, timeout=30, what="ten sweeps")
    t_kill = time.time()
    fleet.workers["core-c"].kill9()  # the leader's whole worker (its node goes silent too: it hosts no primary)
    wait_for(lambda: (ld := leader(fleet)) is not None and ld.node in ("core-a", "core-b"), timeout=30,
             what="a standby taking the lease")
    wait_for(lambda: any(m.at > t_kill + 3 for m in marks(fleet)), timeout=30, what="sweeps after the takeover")
    gaps = gaps_after(fleet, t_kill)
    print(f"leader kill: max sweep gap {max(gaps):.2f}s (gaps {[round(g, 2) for g in gaps[:6]]}), {_load()}")
    assert max(gaps) <= MAX_GAP
    elected = [e for e in pulse_events(fleet.state, "detect.leader_elected") if e["ts"] >= t_kill]
    assert elected and elected[0]["node"] in ("core-a", "core-b")
    # core-c's node is dead for real (its worker is gone), but it held no primary: nothing fails over
    wait_for(lambda: "core-c" in [e["node"] for e in pulse_events(fleet.state, "detect.node_dead")], timeout=60,
             what="core-c declared dead by the new leader")
    assert fleet.records() == []
    assert set(e["node"] for e in pulse_events(fleet.state, "detect.node_dead")) == {"core-c"}
    assert fleet.health("ledger", "core-a")["epoch"] == 1


def test_kill9_of_beat_detection_does_not_notice(hafleet: Fleet) -> None:
    fleet = hafleet
    start(fleet, first="core-a")
    wait_for(lambda: len(marks(fleet)) >= 10, timeout=30, what="ten sweeps")
    t_kill = time.time()
    fleet.beat.kill9()
    wait_for(lambda: any(m.at > t_kill + 6 for m in marks(fleet)), timeout=30, what="six seconds of sweeps")
    gaps = gaps_after(fleet, t_kill)
    print(f"beat kill: max sweep gap {max(gaps):.2f}s over {len(gaps)} sweeps, {_load()}")
    assert max(gaps) <= MAX_GAP
    assert fleet.records() == [] and not pulse_events(fleet.state, "detect.node_dead")
    assert leader(fleet).node == "core-a", "the leader did not change"


def test_redis_restarts_cause_no_failover_and_detection_resumes_within_5s(hafleet: Fleet,
                                                                          own_redis: RedisServer) -> None:
    fleet = hafleet
    rounds = int(os.environ.get("CONTINUITY_TEST_REDIS_RESTARTS", "3"))
    start(fleet, first="core-a")
    resumed: list[float] = []
    for i in range(rounds):
        wait_for(lambda: settled(fleet), timeout=60, what="every node alive, no grace running")
        own_redis.kill()
        t_down = time.time()
        time.sleep(OUTAGE)  # the fault itself: redis-server stays dead this long
        own_redis.start()
        t_back = time.time()  # it answers a ping (the detector may have swept a moment before this line)
        fleet.client.connection_pool.reset()
        first = wait_for(lambda down=t_down: next((m for m in marks(fleet) if m.at > down), None), timeout=60,
                         what="a sweep after Redis came back")
        resumed.append(first.at - t_back)
        print(f"redis restart {i + 1}/{rounds}: detection resumed {first.at - t_back:.2f}s after Redis was back "
              f"(journal gap {first.gap}), leader {first.node}, {_load()}")
    try:
        wait_for(lambda: settled(fleet), timeout=60, what="every node alive after the last restart")
    finally:  # the reason first, when there is one
        assert fleet.records() == [], "a failover of a healthy service"
        assert not pulse_events(fleet.state, "detect.node_dead")
    assert max(resumed) <= RESUME_WITHIN, resumed
    graces = [e for e in pulse_events(fleet.state, "detect.grace_started")]
    assert len(graces) >= rounds and {e["data"]["reason"] for e in graces} <= {"redis-unreachable",
                                                                                 "leader-changed"}
    assert not pulse_events(fleet.state, "detect.tilt"), "an outage is not the detector's own pause"
    out = run_cli("pulse", "verify", env=fleet.env)
    assert out.returncode == 0, out.stdout + out.stderr
