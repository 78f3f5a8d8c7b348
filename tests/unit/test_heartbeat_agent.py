"""The node agent's steps on a fake monotonic clock against a real redis-server (no worker, no threads).

Self-fencing is the invariant here: a primary that cannot renew its lease runs
its demote hook *before* the lease could have expired at Redis — when the node is
cut off (timeouts). When Redis itself is down (connection refused), the primary
keeps its role and renews as soon as Redis answers (continuity/detect/outage.py).

Hooks run on the agent's per-service lanes, not inside ``beat_once``: each step is
followed by ``wait_idle()`` before the recorded hooks are looked at.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from continuity.blueprint import Blueprint, parse_blueprint
from continuity.config import parse_text
from continuity.detect.agent import Agent, AgentRunner
from continuity.redisd import free_port
from continuity.services.probes import ProbeResult
from continuity.state import heartbeats, keys, leases
from tests.helpers import wait_for

FLEET = """\
version: 1
fleet: agent
policy: {heartbeat_interval: 1s, lease_ttl: 3s, lease_margin: 1s, suspect_after: 1.5s, dead_after: 2.5s}
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
      reports: {tier: 2, placement: {primary: core-a}}
      keystore: {tier: 0, placement: {primary: core-b, standbys: [core-a]}}
"""
KEY = b"agent-test-key"


@dataclass
class Recorder:
    hooks: list[tuple[str, str, str, int | None]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def run_hook(self, bp: Blueprint, svc: str, node: str, which: str, epoch: int | None, timeout: float = 0) -> None:
        self.hooks.append((svc, node, which, epoch))

    def emit(self, kind: str, **kw: Any) -> None:
        self.events.append((kind, kw))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def bp() -> Blueprint:
    return parse_blueprint(parse_text(FLEET, "agent.yml"))


def make(bp: Blueprint, rds: Any, node: str = "core-a", healthy: bool = True) -> tuple[Agent, Recorder, Clock]:
    rec, clock = Recorder(), Clock()

    def prober(bp_: Blueprint, svc: str, node_: str, epoch: int | None) -> ProbeResult:
        return ProbeResult(healthy, f"{svc} fake probe")

    agent = Agent(bp, node, rds, KEY, pulse=rec, clock=clock, run_hook=rec.run_hook, prober=prober)
    return agent, rec, clock


def dead_client(port: int | None = None) -> redis.Redis:
    """A client of a Redis that is down (nothing listens: connection refused), or of ``port``."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(port=port or free_port(), socket_timeout=0.2, socket_connect_timeout=0.2,
                       decode_responses=True, retry=Retry(NoBackoff(), 0))


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a node cut off by a lost route."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    yield s.getsockname()[1]
    s.close()


def test_bootstrap_takes_epoch_one_and_starts_declared_primaries(bp, rds) -> None:
    agent, rec, _ = make(bp, rds)
    assert agent.beat_once()
    agent.wait_idle()
    assert sorted(rec.hooks) == [("ledger", "core-a", "start", 1), ("reports", "core-a", "start", 1)]
    assert leases.read(rds, "ledger").node == "core-a"
    assert leases.read(rds, "keystore") is None, "core-b's service is core-b's to bootstrap"
    other, rec_b, _ = make(bp, rds, "core-b")
    other.beat_once()
    other.wait_idle()
    assert rec_b.hooks == [("keystore", "core-b", "start", 1)]
    # a second agent start (worker restart) does not bootstrap again
    again, rec2, _ = make(bp, rds)
    again.beat_once()
    again.wait_idle()
    assert rec2.hooks == []
    assert set(again.held) == {"ledger", "reports"}, "it adopts the roles its lease says it holds"


def test_beat_is_signed_stamped_and_renews_held_leases(bp, rds) -> None:
    agent, _, _ = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    agent.probe_once()
    rds.pexpire(keys.lease("ledger"), 500)
    agent.beat_once()
    agent.wait_idle()
    assert leases.read(rds, "ledger").ttl > 2.5, "the beat renewed the lease"
    raw = rds.hget(keys.heartbeats(), "core-a")
    arrival = float(rds.hget(keys.heartbeat_arrivals(), "core-a"))
    hb = heartbeats.verify(raw, "core-a", heartbeats.KeyRing({"core-a": KEY}), last_seq=None, arrival=arrival,
                          max_age=10)
    assert hb.services["ledger"] == {"role": "primary", "epoch": 1, "healthy": True, "detail": "ledger fake probe"}
    assert hb.services["keystore"]["role"] == "standby"
    assert rds.hexists(keys.nodes_seen(), "core-a")
    first_seq = hb.seq
    agent.beat_once()
    agent.wait_idle()
    hb2 = heartbeats.verify(rds.hget(keys.heartbeats(), "core-a"), "core-a", heartbeats.KeyRing({"core-a": KEY}),
                           last_seq=first_seq, arrival=None, max_age=10)
    assert hb2.seq > first_seq


def test_self_fences_before_the_lease_can_expire_when_cut_off(bp, rds, blackhole) -> None:
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    rec.hooks.clear()
    agent.client = dead_client(blackhole)
    limit = bp.policy.lease_ttl - agent.safety
    assert 0 < limit < bp.policy.lease_ttl
    for _ in range(2):
        clock.t += 1.0
        assert agent.beat_once() is False
        agent.wait_idle()
        assert agent.check_fence() == []
        agent.wait_idle()
    clock.t += limit - 2.0 + 0.01
    demoted = agent.check_fence()
    agent.wait_idle()
    assert sorted(demoted) == ["ledger", "reports"]
    assert sorted(rec.hooks) == [("ledger", "core-a", "demote", 1), ("reports", "core-a", "demote", 1)]
    assert rec.kinds().count("failover.self_demoted") == 2
    assert agent.check_fence() == [], "demoted once"
    agent.wait_idle()
    # nothing is reported as primary any more
    assert all(v["role"] == "standby" for v in agent._report().values())


def test_reclaims_its_own_lease_when_redis_returns_before_anyone_took_over(bp, rds) -> None:
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    real = agent.client
    agent.client = dead_client()
    clock.t += 3.0
    agent.check_fence()
    agent.wait_idle()
    rec.hooks.clear()
    rds.delete(keys.lease("reports"))  # this one expired meanwhile; ledger's survived
    agent.client = real
    agent.beat_once()
    agent.wait_idle()
    assert sorted(rec.hooks) == [("ledger", "core-a", "start", 1), ("reports", "core-a", "start", 1)]
    assert rec.kinds().count("failover.self_repromoted") == 2
    assert leases.read(rds, "reports").node == "core-a"


def test_no_reclaim_after_a_failover_fenced_the_old_epoch(bp, rds) -> None:
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    real = agent.client
    agent.client = dead_client()
    clock.t += 3.0
    agent.check_fence()
    agent.wait_idle()
    rec.hooks.clear()
    rds.delete(keys.lease("ledger"))
    rds.set(keys.epoch("ledger"), 2)       # a failover fenced ...
    agent.client = real
    agent.beat_once()
    agent.wait_idle()
    assert ("ledger", "core-a", "start", 1) not in rec.hooks
    assert leases.read(rds, "ledger") is None
    assert leases.acquire(rds, "ledger", "core-b", 2, ttl=3)   # ... and promoted core-b
    agent.beat_once()
    agent.wait_idle()
    assert "ledger" not in agent.held and "ledger" not in agent.demoted


def test_a_role_taken_by_another_node_is_demoted_at_once(bp, rds) -> None:
    agent, rec, _ = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    rec.hooks.clear()
    rds.delete(keys.lease("ledger"))
    rds.set(keys.epoch("ledger"), 2)
    leases.acquire(rds, "ledger", "core-b", 2, ttl=3)
    agent.beat_once()
    agent.wait_idle()
    assert rec.hooks == [("ledger", "core-a", "demote", 1)]
    assert "ledger" not in agent.held
    ev = [kw for k, kw in rec.events if k == "failover.self_demoted"][0]
    assert "core-b" in ev["data"]["reason"]


def test_promotion_by_a_chain_is_adopted_without_running_hooks(bp, rds) -> None:
    agent, rec, _ = make(bp, rds, "core-b")
    agent.beat_once()
    agent.wait_idle()
    rec.hooks.clear()
    rds.set(keys.epoch("ledger"), 2)
    assert leases.acquire(rds, "ledger", "core-b", 2, ttl=3)
    agent.beat_once()
    agent.wait_idle()
    assert agent.held["ledger"].epoch == 2 and rec.hooks == []


def test_demote_all_on_shutdown(bp, rds) -> None:
    agent, rec, _ = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    rec.hooks.clear()
    assert agent.demote_all("worker shutting down") == ["ledger", "reports"]
    assert {h[2] for h in rec.hooks} == {"demote"}


def test_runner_threads_beat_and_stop(bp, rds) -> None:
    agent, _, _ = make(bp, rds)
    agent.clock = __import__("time").monotonic
    runner = AgentRunner(agent, interval=0.05).start()
    try:
        wait_for(lambda: agent.seq and rds.hexists(keys.heartbeats(), "core-a") and agent.health, timeout=10,
                 what="agent threads to beat and probe")
    finally:
        runner.stop()
    assert all(not t.is_alive() for t in runner._threads)


def _holders(rds: Any, svc: str) -> list[str]:
    lease = leases.read(rds, svc)
    return [] if lease is None else [lease.node]


def test_a_vanished_lease_is_taken_back_by_its_running_holder(bp, rds) -> None:
    """Redis lost the lease key (restart without it, operator DEL): the primary keeps its role, no second holder."""
    agent, rec, _ = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    standby, _, _ = make(bp, rds, "core-b")
    standby.beat_once()
    standby.wait_idle()
    rds.delete(keys.lease("ledger"))
    standby.beat_once()  # the standby sees the orphan, but it is not its own: it takes nothing
    standby.wait_idle()
    assert _holders(rds, "ledger") == []
    agent.beat_once()
    agent.wait_idle()
    lease = leases.read(rds, "ledger")
    assert (lease.node, lease.epoch) == ("core-a", 1)
    assert "ledger" in agent.held and ("ledger", "core-a", "demote", 1) not in rec.hooks, "kept running"
    assert "detect.lease_retaken" in rec.kinds()
    standby.beat_once()
    standby.wait_idle()
    assert "ledger" not in standby.held


def test_a_restarted_worker_reclaims_its_role_at_the_same_epoch(bp, rds) -> None:
    agent, _, _ = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    agent.demote_all("worker shutting down")
    rds.delete(keys.lease("ledger"), keys.lease("reports"))  # the lease ran out while the worker restarted
    again, rec, _ = make(bp, rds)  # a new process: no memory of what it held
    again.beat_once()
    again.wait_idle()
    assert ("ledger", "core-a", "start", 1) in rec.hooks and leases.read(rds, "ledger").epoch == 1
    assert "failover.self_repromoted" in rec.kinds()


def test_no_reclaim_after_a_fence_or_a_release(bp, rds) -> None:
    agent, _, _ = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    rds.delete(keys.lease("ledger"))
    rds.incr(keys.epoch("ledger"))  # a failover fenced epoch 2 for another node
    agent.beat_once()
    agent.wait_idle()
    assert leases.read(rds, "ledger") is None and "ledger" not in agent.held, "stale epoch: demoted, not retaken"
    # a deliberate release (switchover) clears the record: the old primary does not take the role back
    assert leases.release(rds, "reports", "core-a", 1)
    assert leases.holder_of_record(rds, "reports") is None
    fresh, rec, _ = make(bp, rds)
    fresh.beat_once()
    fresh.wait_idle()
    assert leases.read(rds, "reports") is None and not rec.hooks


def test_racing_retake_and_promotion_never_make_two_holders(bp, rds) -> None:
    agent, _, _ = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    rds.delete(keys.lease("ledger"))
    assert leases.acquire(rds, "ledger", "core-b", 1, ttl=3)  # someone else got there first at the same epoch
    agent.beat_once()
    agent.wait_idle()
    assert _holders(rds, "ledger") == ["core-b"] and "ledger" not in agent.held


def test_no_start_hook_while_the_stop_hook_still_runs(bp, rds) -> None:
    """A demotion in progress and a lease that outlived it: the reclaim waits for the stop to finish."""
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    clock.t += 3.0
    with agent.lock:  # the watchdog took the role away and its stop hook is still running
        held = agent.held.pop("ledger")
        agent.demoted["ledger"] = held.epoch
        agent.demoting.add("ledger")
        agent.started.pop("ledger", None)  # as _demote does before it runs the hook
    rec.hooks.clear()
    clock.t -= 3.0  # a fresh answer from Redis: our lease is still there
    agent.beat_once()
    agent.wait_idle()
    assert ("ledger", "core-a", "start", 1) not in rec.hooks
    agent.demoting.discard("ledger")  # the stop hook finished
    agent.beat_once()
    agent.wait_idle()
    assert rec.hooks.count(("ledger", "core-a", "start", 1)) == 1
    agent.beat_once()
    agent.wait_idle()
    assert rec.hooks.count(("ledger", "core-a", "start", 1)) == 1, "one start per reclaim"


def test_an_answer_older_than_the_renewal_limit_demotes_instead_of_renewing(bp, rds) -> None:
    """A beat frozen in flight (SIGSTOP between send and reply) must not count as a renewal."""
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    rec.hooks.clear()
    real_beat = agent._beat

    def frozen(*args: Any, **kwargs: Any) -> Any:
        out = real_beat(*args, **kwargs)
        clock.t += 3.0  # the process was stopped while the reply was on its way
        return out

    agent._beat = frozen
    agent.beat_once()
    agent.wait_idle()
    assert ("ledger", "core-a", "demote", 1) in rec.hooks
    assert "failover.self_demoted" in rec.kinds()


# --- Redis down (refused) is ridden out; cut off (timeouts) is not -----------------------------------------------
def test_a_primary_keeps_its_role_through_a_redis_outage_and_renews_when_it_answers(bp, rds) -> None:
    """A restart of Redis (5 s) or a Sentinel promotion (3 s) outlasts the 2.25 s self-fence limit: the
    connection is refused, so nobody can take the lease meanwhile, and demoting every primary would turn
    each Redis blip into a fleet-wide outage."""
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    rec.hooks.clear()
    real = agent.client
    agent.client = dead_client()  # refused: Redis is down
    for _ in range(20):  # 5 s of retries every interval / 4
        clock.t += 0.25
        assert agent.beat_once() is False
        assert agent.check_fence() == []
    agent.wait_idle()
    assert rec.hooks == [] and set(agent.held) == {"ledger", "reports"}
    rds.delete(keys.lease("ledger"), keys.lease("reports"))  # the leases expired while Redis was down
    agent.client = real
    clock.t += 0.25
    assert agent.beat_once()
    agent.wait_idle()
    assert rec.hooks == [], "no demote, no restart: the service served throughout"
    assert {leases.read(rds, s).node for s in ("ledger", "reports")} == {"core-a"}, "leases taken back"
    assert "failover.self_demoted" not in rec.kinds()
    outage = [kw for k, kw in rec.events if k == "detect.redis_outage"]
    assert len(outage) == 1 and outage[0]["data"]["causes"] == ["redis-down"]
    assert outage[0]["data"]["kept"] == ["ledger", "reports"]
    assert agent.check_fence() == []


def test_cut_off_after_redis_came_back_demotes_at_once(bp, rds, blackhole) -> None:
    """Redis was down (refused), then this node's attempts time out: Redis may be back for everyone else."""
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    rec.hooks.clear()
    agent.client = dead_client()
    for _ in range(12):
        clock.t += 0.25
        agent.beat_once()
    assert agent.check_fence() == []
    agent.client = dead_client(blackhole)
    clock.t += 0.25
    assert agent.beat_once() is False
    assert sorted(agent.check_fence()) == ["ledger", "reports"]
    agent.wait_idle()
    assert sorted(rec.hooks) == [("ledger", "core-a", "demote", 1), ("reports", "core-a", "demote", 1)]


def test_an_old_proof_of_a_redis_outage_does_not_keep_a_primary(bp, rds) -> None:
    """Attempts that stop (the beat thread stalled) leave the last proof to age like a renewal would."""
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    agent.client = dead_client()
    clock.t += 2.0
    agent.beat_once()
    limit = bp.policy.lease_ttl - agent.safety
    clock.t += limit - 0.01
    assert agent.check_fence() == []
    clock.t += 0.02
    assert sorted(agent.check_fence()) == ["ledger", "reports"]


def test_no_redis_outage_is_ridden_out_past_the_tolerance(bp, rds) -> None:
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    agent.client = dead_client()
    start = clock.t
    while clock.t - start < bp.policy.redis_outage_tolerance:
        assert agent.check_fence() == []
        clock.t += 1.0
        agent.beat_once()
    assert set(agent.held) == {"ledger", "reports"}
    clock.t += 0.5
    agent.beat_once()
    assert agent.held == {}, "demoted past the tolerance"


def test_sentinels_reporting_a_failover_keep_the_primary_and_silent_sentinels_do_not(bp, rds, blackhole) -> None:
    """With Sentinel, a timeout alone is no proof: what the sentinels say about the master decides."""
    @dataclass
    class Report:
        answered: int
        failing_over: bool

    @dataclass
    class Diagnosis:
        symptom: str
        sentinels: Report

    for report, kept in ((Report(3, True), True), (Report(0, False), False), (Report(3, False), False)):
        rds.flushall()
        agent, rec, clock = make(bp, rds)
        agent.beat_once()
        agent.wait_idle()
        agent.diagnose = lambda exc, r=report: Diagnosis("timeout", r)
        agent.client = dead_client(blackhole)
        for _ in range(12):
            clock.t += 0.25
            agent.beat_once()
        agent.check_fence()
        assert (set(agent.held) == {"ledger", "reports"}) is kept, report


def test_a_broken_connection_is_retried_at_once_before_it_is_judged(bp, rds) -> None:
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    calls = []

    @dataclass
    class Diagnosis:
        symptom: str
        sentinels: Any = None

    def diagnose(exc: BaseException) -> Diagnosis:
        calls.append(exc)
        return Diagnosis("reset" if len(calls) == 1 else "refused")

    agent.diagnose = diagnose
    agent.client = dead_client()
    assert agent.beat_once() is False
    assert len(calls) == 2, "a reset is followed by one immediate attempt"
    assert agent.down_at == clock.t, "the second attempt, refused, proved Redis down"


def test_an_unconfirmed_bootstrap_is_confirmed_before_the_service_starts(bp, rds, monkeypatch) -> None:
    """Epoch 1 written on the master but not on its replicas: no start until a retry gets it confirmed."""
    from continuity.state import durability

    acked = {"n": 0}
    real_run = durability.run_with_wait

    def run_with_wait(client, queue):
        results, _ = real_run(client, queue)  # a single Redis: the replica's answer is acked["n"]
        return results, durability.Confirmation(1, acked["n"], 10)

    monkeypatch.setattr(leases, "run_with_wait", run_with_wait)
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    agent.wait_idle()
    assert rec.hooks == [], "nothing starts on an epoch the replicas may not have"
    assert rds.get(keys.epoch("ledger")) == "1", "the write itself is on the master"
    acked["n"] = 1
    clock.t += 1
    agent.beat_once()
    agent.wait_idle()
    assert sorted(rec.hooks) == [("ledger", "core-a", "start", 1), ("reports", "core-a", "start", 1)]


def test_a_broken_connection_is_retried_on_a_fresh_one(bp, rds) -> None:
    """After a server died every pooled connection is broken: the retry must not pick another stale one."""
    agent, rec, clock = make(bp, rds)
    agent.beat_once()
    dropped = []
    agent.client = dead_client()
    agent.client.connection_pool.disconnect = lambda *a, **k: dropped.append(1)

    @dataclass
    class Diagnosis:
        symptom: str
        sentinels: Any = None

    agent.diagnose = lambda exc: Diagnosis("reset")
    assert agent.beat_once() is False
    assert dropped == [1]
