"""The detector loop: election, hot standby, stepping down when it cannot renew, riding out Redis failures.

Real redis-server (the lease is its TTL and its clock); the loops' monotonic clocks are injected and each
test drives :meth:`DetectorLoop.step` by hand, except where the thread itself is under test.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from continuity.blueprint import Blueprint, parse_blueprint
from continuity.config import parse_text
from continuity.detect.agent import Agent
from continuity.detect.loop import DetectorLoop
from continuity.services.probes import ProbeResult
from continuity.state import detection, detector_leader, heartbeats, keys
from continuity.state.detector_leader import Identity
from tests.helpers import wait_for
from tests.unit.test_detector_sweep import FLEET, KEYS, Events

A = Identity("core-a@t:1:a", "core-a", "t", 1)
B = Identity("core-b@t:2:b", "core-b", "t", 2)


class Clock:
    """The loop's monotonic clock, moved by hand (``t``)."""

    t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def bp() -> Blueprint:
    return parse_blueprint(parse_text(FLEET, "loop.yml"))


@pytest.fixture
def agents(bp, rds) -> dict[str, Agent]:
    return {n: Agent(bp, n, rds, KEYS[n], run_hook=lambda *a, **k: None, prober=lambda *a: ProbeResult(True, "ok"))
            for n in KEYS}


def beat(agents: dict[str, Agent]) -> None:
    for a in agents.values():
        a.beat_once()


class Switch:
    """A connection factory whose Redis can be made unreachable: every client it made (and makes) then connects to a
    closed port, as during a Redis restart, until it is switched back on."""

    def __init__(self, url: str) -> None:
        self.url, self._up = url, True
        self.made: list[redis.Redis] = []

    def __call__(self) -> Any:
        client = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)
        self.made.append(client)
        self._point(client)
        return client

    @property
    def up(self) -> bool:
        return self._up

    @up.setter
    def up(self, value: bool) -> None:
        self._up = value
        for client in self.made:
            self._point(client)

    def _point(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        pool.connection_kwargs["port"] = int(self.url.rsplit(":", 1)[1].split("/")[0]) if self._up else 1
        pool.reset()  # connections made from now on go to the new port


def make(bp, switch: Switch, me: Identity, events: Events | None = None, lease: float = 5.0,
         launched: list | None = None, clock: Any = None) -> DetectorLoop:
    def launch(plans: list, trigger: dict) -> list[str]:
        assert launched is not None
        launched.append((plans, trigger))
        return []

    return DetectorLoop(switch, lambda: bp, me, pulse=events, lease_ttl=lease, ingest=False, clock=clock or Clock(),
                        keyring=heartbeats.KeyRing(dict(KEYS)), launch=launch if launched is not None else None)


def test_one_loop_leads_and_sweeps_the_other_stands_by(bp, rds, redis_url, agents) -> None:
    sw = Switch(redis_url)
    ev_a, ev_b = Events(), Events()
    a, b = make(bp, sw, A, ev_a), make(bp, sw, B, ev_b)
    beat(agents)
    a.step()
    b.step()
    assert a.leading and not b.leading and a.stats.sweeps == 1 and b.stats.sweeps == 0
    assert [e["data"]["term"] for e in ev_a.of("detect.leader_elected")] == [a.term] and not ev_b.items
    assert b.previous == A.id
    assert {m.node for m in detection.sweeps(rds)} == {"core-a"}
    # the leader sweeps once per heartbeat interval of its own clock, renewing in between
    wait = a.step()
    assert a.stats.sweeps == 1 and 0 < wait <= bp.policy.heartbeat_interval
    a.clock.t += bp.policy.heartbeat_interval
    a.step()
    assert a.stats.sweeps == 2 and a.stats.last.outcome.own_gap == pytest.approx(bp.policy.heartbeat_interval)


def test_stop_hands_the_lease_over_at_once(bp, rds, redis_url) -> None:
    sw = Switch(redis_url)
    ev = Events()
    a, b = make(bp, sw, A, ev), make(bp, sw, B)
    a.step()
    a.stop()
    assert ev.of("detect.leader_resigned")[0]["data"]["reason"] == "worker shutting down"
    b.step()
    assert b.leading and b.stats.sweeps == 1, "the standby did not wait for the TTL"


def test_a_killed_leaders_standby_takes_over_when_the_lease_lapses(bp, rds, redis_url, agents) -> None:
    sw = Switch(redis_url)
    # real monotonic clocks: the gap B judges is real Redis time, so what B watched must be real time too
    a, b = make(bp, sw, A, lease=0.3, clock=time.monotonic), make(bp, sw, B, Events(), lease=0.3, clock=time.monotonic)
    beat(agents)
    a.step()  # ... and then A's process is killed: it never steps again, nor releases
    b.step()
    assert not b.leading
    b.watch_since -= 60  # B has been a standby for a minute (Redis answered every poll), as in a running fleet
    wait_for(lambda: b.step() is not None and b.leading, timeout=10, what="B taking over")
    assert b.stats.sweeps == 1 and detection.sweeps(rds)[-1].node == "core-b"
    assert detector_leader.read(rds).id == B.id
    out = b.stats.last.outcome
    assert not out.tilt and not out.grace, "B watched Redis all along: no TILT, no grace"


def test_redis_failure_steps_the_leader_down_and_it_resumes_with_a_grace(bp, rds, redis_url, agents) -> None:
    sw = Switch(redis_url)
    ev = Events()
    a = make(bp, sw, A, ev)
    beat(agents)
    a.step()
    assert a.leading
    sw.up = False
    a.clock.t += 1.0
    wait = a.step()  # Redis unreachable: no exception, the leader stops sweeping at once
    assert not a.leading and a.stats.redis_failures == 1 and 0 < wait < 1
    assert ev.of("detect.leader_resigned")[0]["data"]["reason"].startswith("Redis unreachable")
    a.clock.t += 1.0
    a.step()
    assert not a.leading and a.stats.sweeps == 1, "still down: still no sweep"
    sw.up = True
    a.clock.t += 0.1
    beat(agents)
    a.step()
    assert a.leading and a.stats.sweeps == 2
    out = a.stats.last.outcome
    assert out.grace_started and out.meta.grace_reason == "redis-unreachable" and not out.tilt
    assert ev.of("detect.grace_started")[0]["data"]["reason"] == "redis-unreachable"


def test_the_leader_stops_sweeping_when_another_holds_the_lease(bp, rds, redis_url) -> None:
    sw = Switch(redis_url)
    ev = Events()
    a = make(bp, sw, A, ev)
    a.step()
    rds.delete(keys.detector_leader())
    detector_leader.claim(rds, B, 5.0)  # A stalled past its lease and B took it
    a.clock.t += 5.0
    a.step()
    assert not a.leading and a.stats.sweeps == 1
    assert ev.of("detect.leader_resigned")[0]["data"]["reason"] == "another process holds the lease"


def test_own_pause_is_tilt_a_standbys_poll_is_not(bp, rds, redis_url, agents) -> None:
    sw = Switch(redis_url)
    a = make(bp, sw, A, Events())
    beat(agents)
    a.step()
    # the leader's process stood still for 3 tilt gaps (Redis kept answering; lease 5 s): its own clock moves,
    # and so does Redis's (moved back by hand: this test does not wait 15 s)
    a.clock.t += 3 * bp.policy.tilt_gap
    meta = json.loads(rds.get(keys.detector_meta()))
    meta["last_sweep"] -= 3 * bp.policy.tilt_gap
    rds.set(keys.detector_meta(), json.dumps(meta))
    beat(agents)
    a.step()
    out = a.stats.last.outcome
    assert out.tilt and out.tilt_reason == "paused" and out.grace


def test_the_thread_survives_a_failing_tick_and_sweeps_again(bp, rds, redis_url) -> None:
    sw = Switch(redis_url)
    calls = {"n": 0}

    def flaky() -> Blueprint:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("blueprint unreadable")
        return bp

    loop = DetectorLoop(sw, flaky, A, lease_ttl=0.6, ingest=False, keyring=heartbeats.KeyRing(dict(KEYS)))
    loop.start()
    try:
        wait_for(lambda: loop.stats.sweeps >= 2, timeout=20, what="sweeps after failing ticks")
        assert loop.alive()
    finally:
        loop.stop()
    assert detector_leader.read(rds) is None


def test_the_leader_runs_the_ingest_and_stops_it_when_it_steps_down(bp, rds, redis_url, agents) -> None:
    sw = Switch(redis_url)
    a = DetectorLoop(sw, lambda: bp, A, lease_ttl=5.0, ingest=True, clock=Clock(),
                     keyring=heartbeats.KeyRing(dict(KEYS)))
    beat(agents)
    a.step()
    ingest = a._ingest
    assert ingest is not None and ingest.alive()
    beat(agents)
    wait_for(lambda: rds.hlen(keys.heartbeats_pending()) == 0, timeout=10, what="ingest draining the beats")
    sw.up = False
    a.step()
    assert a._ingest is None and not ingest.alive()
