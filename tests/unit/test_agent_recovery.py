"""Local recovery in the node agent on a fake clock against a real redis-server: restart in place, then give up.

A service that crashes on a live node must come back (restart, same epoch) or be handed to the
detector (lease released, failed marker set), never left dead behind a lease that keeps being renewed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from continuity.blueprint import Blueprint, parse_blueprint
from continuity.config import parse_text
from continuity.detect.agent import Agent
from continuity.services.probes import ProbeResult
from continuity.state import keys, leases

FLEET = """\
version: 1
fleet: recovery
policy: {heartbeat_interval: 1s, lease_ttl: 3s, lease_margin: 1s, suspect_after: 1.5s, dead_after: 2.5s,
         restart_after_failures: 3, max_local_restarts: 2, restart_window: 60s}
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
      bare:
        tier: 1
        placement: {primary: core-a, standbys: [core-b]}
        probe: {kind: tcp, port: 1}
        hooks: {stop: ["true"]}
"""
KEY = b"recovery-test-key"


@dataclass
class World:
    """Recorded hooks and events, a fake clock, and per-service probe answers a test flips."""

    healthy: dict[str, bool] = field(default_factory=dict)
    hooks: list[tuple[str, str, int | None]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    t: float = 100.0

    def run_hook(self, bp: Blueprint, svc: str, node: str, which: str, epoch: int | None, timeout: float = 0) -> None:
        self.hooks.append((svc, which, epoch))

    def emit(self, kind: str, **kw: Any) -> None:
        self.events.append((kind, kw))

    def prober(self, bp: Blueprint, svc: str, node: str, epoch: int | None) -> ProbeResult:
        return ProbeResult(self.healthy.get(svc, True), f"{svc} {'up' if self.healthy.get(svc, True) else 'down'}")

    def kinds(self, svc: str | None = None) -> list[str]:
        return [k for k, kw in self.events if svc is None or kw.get("service") == svc]


@pytest.fixture
def world(rds) -> tuple[Agent, World]:
    bp = parse_blueprint(parse_text(FLEET, "recovery.yml"))
    w = World()
    agent = Agent(bp, "core-a", rds, KEY, pulse=w, clock=lambda: w.t, wall=lambda: 1_000_000 + w.t,
                  run_hook=w.run_hook, prober=w.prober)
    agent.beat_once()  # bootstrap: core-a holds ledger and bare at epoch 1
    agent.wait_idle()  # hooks run on the agent's lanes: drain them before looking
    w.hooks.clear()
    return agent, w


def rounds(agent: Agent, w: World, n: int) -> None:
    """n heartbeat intervals: beat (renews), probe + recovery, one second on the fake clock."""
    for _ in range(n):
        agent.beat_once()
        agent.tend()
        agent.wait_idle()
        w.t += 1.0


def test_a_crashed_service_is_restarted_in_place_at_the_same_epoch(world, rds) -> None:
    agent, w = world
    w.healthy["ledger"] = False
    rounds(agent, w, 2)
    assert w.hooks == [], "two failed probes are not enough"
    rounds(agent, w, 1)
    assert w.hooks == [("ledger", "start", 1)]
    (ev,) = [kw for k, kw in w.events if k == "failover.service_restarted"]
    assert ev["epoch"] == 1 and ev["data"]["failures"] == 3 and ev["data"]["restarts"] == 1
    assert ev["data"]["since"] == pytest.approx(1_000_000 + 100.0)
    lease = leases.read(rds, "ledger")
    assert lease.node == "core-a" and lease.epoch == 1, "a local restart keeps the role"
    assert rds.get(keys.service_failed("ledger")) is None
    w.healthy["ledger"] = True
    rounds(agent, w, 5)
    assert w.hooks == [("ledger", "start", 1)] and "failover.service_failed" not in w.kinds()


def test_restarts_exhausted_the_role_is_released_and_marked_failed(world, rds) -> None:
    agent, w = world
    w.healthy["ledger"] = False
    rounds(agent, w, 9)
    assert w.hooks == [("ledger", "start", 1), ("ledger", "start", 1), ("ledger", "demote", 1)]
    assert leases.read(rds, "ledger") is None, "released"
    assert leases.holder_of_record(rds, "ledger") is None, "and not ours to take back"
    marker = json.loads(rds.get(keys.service_failed("ledger")))
    assert marker["node"] == "core-a" and marker["epoch"] == 1 and marker["restarts"] == 2
    assert "after 2 local restart(s)" in marker["reason"]
    assert marker["since"] == pytest.approx(1_000_000 + 100.0) and marker["at"] > marker["since"]
    assert w.kinds("ledger")[-2:] == ["failover.self_demoted", "failover.service_failed"]
    assert "ledger" not in agent.held
    # later beats neither renew nor retake it, and nothing is started again
    rounds(agent, w, 5)
    assert leases.read(rds, "ledger") is None and w.hooks[-1] == ("ledger", "demote", 1)
    assert agent._report()["ledger"]["role"] == "standby"
    assert leases.read(rds, "bare").node == "core-a", "the other service is untouched"


def test_no_start_hook_gives_up_without_restarting(world, rds) -> None:
    agent, w = world
    w.healthy["bare"] = False
    rounds(agent, w, 3)
    assert w.hooks == [("bare", "demote", 1)]
    assert "no start hook" in json.loads(rds.get(keys.service_failed("bare")))["reason"]


def test_a_successful_probe_resets_the_streak(world, rds) -> None:
    agent, w = world
    for _ in range(4):
        w.healthy["ledger"] = False
        rounds(agent, w, 2)
        w.healthy["ledger"] = True
        rounds(agent, w, 1)
    assert w.hooks == [], "never three failures in a row"


def test_a_new_epoch_starts_with_a_fresh_budget(world, rds) -> None:
    agent, w = world
    w.healthy["ledger"] = False
    rounds(agent, w, 6)  # two restarts spent at epoch 1
    # a failover moved the role away and back (epoch 3): the agent adopts it with a clean slate
    rds.delete(keys.lease("ledger"))
    rds.set(keys.epoch("ledger"), 3)
    assert leases.acquire(rds, "ledger", "core-a", 3, 3.0)
    w.hooks.clear()
    rounds(agent, w, 3)
    assert w.hooks == [("ledger", "start", 3)], "restart, not give-up: the epoch-1 restarts do not count"


def test_no_restart_while_the_role_is_being_demoted(world, rds) -> None:
    agent, w = world
    w.healthy["ledger"] = False
    rounds(agent, w, 2)
    agent.demoting.add("ledger")  # self-fencing is running the stop hook right now
    agent.beat_once()
    agent.recover_once({"ledger": ProbeResult(False, "down")})
    agent.wait_idle()
    assert w.hooks == []
