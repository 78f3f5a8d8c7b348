"""The node agent never waits on a service hook, and never runs two hooks of one service at once.

Real redis-server, fake monotonic clock, fake hooks that block on a ``threading.Event``
the test releases: no sleeps, so a race can only show up as the wrong order or as a
second running instance in the fake's bookkeeping, never as a lost timing bet.
Each test fails on an agent that runs hooks on the thread that decided them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from continuity.blueprint import Blueprint, parse_blueprint
from continuity.config import parse_text
from continuity.detect.agent import Agent
from continuity.detect.recovery import Decision
from continuity.services.probes import ProbeResult
from continuity.state import heartbeats, keys, leases

FLEET = """\
version: 1
fleet: lanes
policy: {heartbeat_interval: 1s, lease_ttl: 3s, lease_margin: 1s, suspect_after: 1.5s, dead_after: 2.5s,
         restart_after_failures: 1, max_local_restarts: 100, restart_window: 60s}
nodes:
  core-a: {kind: core}
  core-b: {kind: core}
domains:
  d:
    rto: 10s
    rpo: 5s
    services:
      ledger:
        tier: 0
        placement: {primary: core-a, standbys: [core-b]}
        probe: {kind: tcp, port: 1}
        hooks: {start: ["true"], stop: ["true"]}
"""
KEY = b"lanes-test-key"
WAIT = 10.0  # upper bound for a thread to get somewhere; never a margin a correct run depends on


class Hooks:
    """A fake process manager behind the hooks, as the sample service's are: a pid file and live processes.

    ``start`` reads the pid file, stops that process and spawns a new one; ``demote`` stops the process the
    pid file names. Neither is atomic (like the real ones), so two overlapping hooks of one service can leave
    two live instances, which :attr:`most_running` remembers. :meth:`hold` makes the next call of a hook
    block until the test releases it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, int | None]] = []  # (hook, begin|end, epoch)
        self.holds: dict[str, tuple[threading.Event, threading.Event]] = {}
        self.pidfile: int | None = None
        self.alive: set[int] = set()
        self.next_pid = 1
        self.in_flight = 0
        self.most_running = 0
        self.most_in_flight = 0
        self.agents: list[Agent] = []  # every agent made with these hooks, waited for at teardown

    def hold(self, which: str) -> tuple[threading.Event, threading.Event]:
        """The next ``which`` hook sets the first event when it has begun and waits for the second."""
        entered, release = threading.Event(), threading.Event()
        self.holds[which] = (entered, release)
        return entered, release

    def run_hook(self, bp: Blueprint, svc: str, node: str, which: str, epoch: int | None, timeout: float = 0) -> None:
        with self.lock:
            self.log.append((which, "begin", epoch))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            gate = self.holds.pop(which, None)
            seen = self.pidfile
        if gate is not None:
            gate[0].set()
            gate[1].wait(WAIT)
        with self.lock:
            self.alive.discard(seen)  # stop what the pid file named when we looked
            if which == "start":
                pid, self.next_pid = self.next_pid, self.next_pid + 1
                self.alive.add(pid)
                self.pidfile = pid
            else:
                self.pidfile = None
            self.most_running = max(self.most_running, len(self.alive))
            self.in_flight -= 1
            self.log.append((which, "end", epoch))

    def release_all(self) -> None:
        for _, release in self.holds.values():
            release.set()


class World:
    def __init__(self) -> None:
        self.t = 100.0
        self.events: list[tuple[str, dict[str, Any]]] = []

    def clock(self) -> float:
        return self.t

    def emit(self, kind: str, **kw: Any) -> None:
        self.events.append((kind, kw))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


@pytest.fixture
def bp() -> Blueprint:
    return parse_blueprint(parse_text(FLEET, "lanes.yml"))


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    yield h
    h.release_all()
    # a lane still running a released hook writes to Redis when it ends (lease, role, events): let every
    # agent of this test finish before the next test flushes the database, or that write lands in the next
    # test (seen once in five full runs: a bootstrap start that never began, behind a stale lease)
    for agent in h.agents:
        assert agent.wait_idle(WAIT), "an agent's hook lane did not finish after its hooks were released"


def make(bp: Blueprint, rds: Any, hooks: Hooks, **kw: Any) -> tuple[Agent, World]:
    w = World()
    agent = Agent(bp, "core-a", rds, KEY, pulse=w, clock=w.clock, wall=lambda: 1_000_000 + w.t,
                  run_hook=hooks.run_hook, prober=lambda *a: ProbeResult(True, "up"), **kw)
    hooks.agents.append(agent)
    return agent, w


def in_thread(step: Callable[[], Any]) -> threading.Thread:
    """Run ``step`` on its own thread: an agent that runs hooks inline would block the test otherwise."""
    t = threading.Thread(target=step, daemon=True)
    t.start()
    return t


def test_beats_go_on_and_renew_while_a_start_hook_is_blocked(bp, rds, hooks) -> None:
    agent, w = make(bp, rds, hooks)
    entered, release = hooks.hold("start")
    first = in_thread(agent.beat_once)  # bootstrap: takes epoch 1 and starts ledger
    first.join(WAIT)
    assert not first.is_alive(), "the first beat waited on the start hook"
    assert entered.wait(WAIT), "the start hook runs (on its lane)"
    seq = agent.seq
    for _ in range(5):  # five beats while the start hook is blocked, well past the 2.25 s renewal limit
        w.t += 1.0
        rds.pexpire(keys.lease("ledger"), 500)
        assert agent.beat_once()
        assert leases.read(rds, "ledger").ttl > 2.5, "the beat renewed the lease"
        assert agent.check_fence() == [], "renewed all along: the watchdog has no reason to demote"
    hb = heartbeats.verify(rds.hget(keys.heartbeats(), "core-a"), "core-a", heartbeats.KeyRing({"core-a": KEY}),
                           last_seq=None, arrival=None, max_age=10)
    assert hb.seq > seq and hb.services["ledger"]["role"] == "primary"
    release.set()
    assert agent.wait_idle(WAIT)
    assert hooks.log == [("start", "begin", 1), ("start", "end", 1)]
    assert "failover.self_demoted" not in w.kinds() and "detect.role_bootstrapped" in w.kinds()


def test_a_demote_decided_while_a_start_runs_waits_for_it_then_stops(bp, rds, hooks) -> None:
    agent, w = make(bp, rds, hooks)
    entered, release = hooks.hold("start")
    in_thread(agent.beat_once)
    assert entered.wait(WAIT)
    w.t += 3.0  # no renewal for longer than the limit: self-fence
    fenced = in_thread(agent.check_fence)
    fenced.join(WAIT)
    assert not fenced.is_alive(), "the watchdog waited on the start hook"
    assert hooks.log == [("start", "begin", 1)], "the demote waits for the start it would race"
    assert "ledger" in agent.demoting and "ledger" not in agent.held
    release.set()
    assert agent.wait_idle(WAIT)
    assert hooks.log == [("start", "begin", 1), ("start", "end", 1), ("demote", "begin", 1), ("demote", "end", 1)]
    assert hooks.alive == set() and "ledger" not in agent.demoting


def test_a_start_made_obsolete_by_a_demote_is_dropped(bp, rds, hooks) -> None:
    """A local restart queued behind a running start, then a demote of that epoch: the restart never runs."""
    agent, w = make(bp, rds, hooks)
    entered, release = hooks.hold("start")
    agent.beat_once()
    assert entered.wait(WAIT)
    agent.recover_once({"ledger": ProbeResult(False, "down")})
    assert not agent.trackers, "not judged while its own start hook runs"
    # decided an instant before the lane got busy (the probe thread's check and its queueing are not atomic)
    agent._restart("ledger", 1, Decision("restart", "down", 1, 1), None)
    w.t += 3.0
    assert agent.check_fence() == ["ledger"]
    release.set()
    assert agent.wait_idle(WAIT)
    assert [h for h in hooks.log if h[1] == "begin"] == [("start", "begin", 1), ("demote", "begin", 1)]
    assert "failover.service_restarted" not in w.kinds()


def test_a_hook_past_its_timeout_is_reported_and_the_lane_goes_on(bp, rds, hooks) -> None:
    agent, w = make(bp, rds, hooks, hook_timeout=0.05, hook_grace=0.0)
    entered, _ = hooks.hold("start")  # never released: a hook runner that ignores its own timeout
    agent.beat_once()
    assert entered.wait(WAIT)
    w.t += 3.0
    assert agent.check_fence() == ["ledger"]
    assert agent.wait_idle(WAIT), "the lane is wedged behind the hung start"
    assert ("demote", "end", 1) in hooks.log, "the demote behind it ran"
    (ev,) = [kw for k, kw in w.events if k == "detect.hook_timed_out"]
    assert ev["service"] == "ledger" and ev["data"]["hook"] == "start" and ev["data"]["timeout"] == 0.05
    boot = [kw for k, kw in w.events if k == "detect.role_bootstrapped"]
    assert boot and boot[0]["data"]["hook_rc"] == 124, "reported as a failed (killed) hook"
    assert "ledger" not in agent.demoting


def test_local_restart_racing_a_demote_never_leaves_two_instances(bp, rds, hooks) -> None:
    """The issue's incident: a local restart and a demote 0.3 s apart left two ledger processes on one node."""
    agent, w = make(bp, rds, hooks)
    agent.beat_once()
    assert agent.wait_idle(WAIT) and hooks.alive == {1}
    for i in range(100):
        entered, release = hooks.hold("start")
        restart = in_thread(lambda: agent.recover_once({"ledger": ProbeResult(False, "down")}))
        assert entered.wait(WAIT), f"round {i}: no restart"
        w.t += 3.0
        agent.check_fence()  # the watchdog demotes while the restart's start hook runs ...
        agent.beat_once()  # ... and the next beat finds the lease still ours: reclaim
        release.set()
        restart.join(WAIT)
        assert agent.wait_idle(WAIT)
        agent.beat_once()  # the reclaim a demote in progress held back
        assert agent.wait_idle(WAIT)
        assert hooks.most_running <= 1, f"round {i}: two live instances {sorted(hooks.alive)}"
        assert hooks.most_in_flight == 1, f"round {i}: two hooks of one service at once"
        assert len(hooks.alive) == 1 and "ledger" in agent.held, f"round {i}: the role ends up served once"
