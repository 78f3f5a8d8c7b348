"""A node never serves less than was acknowledged (issue 10 item 5), at the agent, against a real redis-server.

The role's committed position says 40 records were acknowledged at epoch 1.
An agent whose own copy holds fewer — the replaced machine back on an empty
disk — must not adopt a lease still in its name, reclaim a role whose lease
lapsed, or restart the service in place: it abandons the role (lease or its
record gone, service marked failed, so the detector moves it) and runs no start
hook. The same agent holding every committed record behaves as before.
"""

from __future__ import annotations

from typing import Any

import pytest

from continuity.blueprint import Blueprint, parse_blueprint
from continuity.config import parse_text
from continuity.detect.agent import Agent, held_records
from continuity.services.layout import service_dir
from continuity.services.probes import ProbeResult
from continuity.state import heartbeats, keys, leases
from continuity.state import replication as replication_state
from tests.unit.test_heartbeat_agent import KEY, Clock, Recorder

FLEET = """\
version: 1
fleet: agent
policy: {heartbeat_interval: 1s, lease_ttl: 3s, lease_margin: 1s, suspect_after: 1.5s, dead_after: 2.5s,
         restart_after_failures: 1}
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
        data: [{kind: ledger, path: examples/data/ledger.jsonl}]
        placement: {primary: core-a, standbys: [core-b]}
        probe: {kind: tcp, port: 1}
        hooks: {start: ["true"], stop: ["true"]}
"""
COMMITTED = 40


@pytest.fixture
def bp() -> Blueprint:
    return parse_blueprint(parse_text(FLEET, "agent.yml"))


def make(bp: Blueprint, rds: Any, held: int, healthy: bool = True) -> tuple[Agent, Recorder]:
    rec = Recorder()

    def prober(bp_: Blueprint, svc: str, node_: str, epoch: int | None) -> ProbeResult:
        return ProbeResult(healthy, f"{svc} fake probe")

    agent = Agent(bp, "core-a", rds, KEY, pulse=rec, clock=Clock(), run_hook=rec.run_hook, prober=prober,
                  holdings=lambda bp_, node, svc: {"ledger.jsonl": held})
    return agent, rec


def commit(rds: Any, count: int = COMMITTED, epoch: int = 1) -> None:
    assert replication_state.advance_committed(rds, replication_state.Committed(
        "ledger", "ledger.jsonl", epoch, count, count * 50, count, 1000.0, "core-a", 1000.0))


def started(rec: Recorder) -> list[tuple[str, str, str, int | None]]:
    return [h for h in rec.hooks if h[2] == "start"]


def failed_marker(rds: Any) -> dict[str, Any] | None:
    return leases.read_failed(rds.get(keys.service_failed("ledger")))


@pytest.mark.parametrize("held", [0, COMMITTED - 1])
def test_a_restarted_worker_behind_the_committed_position_gives_up_the_live_lease_in_its_name(bp, rds,
                                                                                              held: int) -> None:
    first, _ = make(bp, rds, COMMITTED)
    first.beat_once()  # bootstrap: epoch 1, lease for core-a
    first.wait_idle()
    commit(rds)
    again, rec = make(bp, rds, held)  # the replaced machine: a new process, its disk short of what was committed
    again.beat_once()
    again.wait_idle()
    assert started(rec) == [] and "ledger" not in again.held
    assert leases.read(rds, "ledger") is None and leases.holder_of_record(rds, "ledger") is None
    marker = failed_marker(rds)
    assert marker is not None and marker["node"] == "core-a" and marker["epoch"] == 1
    assert f"holds {held} of the {COMMITTED} records" in marker["reason"]
    # signed by the node: the detector acts on no other marker, and the role would stay unowned while it lives
    assert heartbeats.verify_claim(marker, heartbeats.KeyRing({"core-a": KEY})) is None
    assert "failover.service_failed" in rec.kinds()
    again.beat_once()  # and it does not come back for it on the next beat
    again.wait_idle()
    assert started(rec) == [] and leases.read(rds, "ledger") is None


def test_a_restarted_worker_holding_every_committed_record_adopts_its_lease(bp, rds) -> None:
    first, _ = make(bp, rds, COMMITTED)
    first.beat_once()
    first.wait_idle()
    commit(rds)
    again, rec = make(bp, rds, COMMITTED + 3)
    again.beat_once()
    again.wait_idle()
    assert again.held["ledger"].epoch == 1 and leases.read(rds, "ledger").node == "core-a"
    assert failed_marker(rds) is None


def test_a_lapsed_role_is_not_reclaimed_by_a_node_behind_it_and_is_marked_for_the_detector(bp, rds) -> None:
    first, _ = make(bp, rds, COMMITTED)
    first.beat_once()
    first.wait_idle()
    commit(rds)
    rds.delete(keys.lease("ledger"))  # the lease ran out while the machine was replaced
    again, rec = make(bp, rds, 0)
    again.beat_once()
    again.wait_idle()
    assert started(rec) == [] and leases.read(rds, "ledger") is None
    assert leases.holder_of_record(rds, "ledger") is None, "the record that would let it reclaim is gone"
    assert failed_marker(rds)["node"] == "core-a"
    # caught up, the same fast restart reclaims as before
    rds.delete(keys.service_failed("ledger"))
    assert leases.acquire(rds, "ledger", "core-a", 1, 3)
    rds.delete(keys.lease("ledger"))
    fine, rec2 = make(bp, rds, COMMITTED)
    fine.beat_once()
    fine.wait_idle()
    assert ("ledger", "core-a", "start", 1) in rec2.hooks


def test_no_restart_in_place_on_a_copy_that_lost_committed_records(bp, rds) -> None:
    agent, rec = make(bp, rds, COMMITTED, healthy=False)
    agent.beat_once()
    agent.wait_idle()
    commit(rds, COMMITTED + 10)  # acknowledged since, and this node's disk no longer has them
    rec.hooks.clear()
    agent.tend()  # the service is down: the ladder would restart it in place
    agent.wait_idle()
    assert started(rec) == [] and ("ledger", "core-a", "demote", 1) in rec.hooks
    assert leases.read(rds, "ledger") is None and failed_marker(rds)["node"] == "core-a"
    # with every record, the same failing probe restarts it in place
    agent2, rec2 = make(bp, rds, COMMITTED + 10, healthy=False)
    rds.delete(keys.service_failed("ledger"))
    assert leases.acquire(rds, "ledger", "core-a", 1, 3)
    agent2.beat_once()
    agent2.wait_idle()
    rec2.hooks.clear()
    agent2.tend()
    agent2.wait_idle()
    assert ("ledger", "core-a", "start", 1) in rec2.hooks


def test_held_records_counts_complete_lines_of_the_nodes_own_copy_only(bp, state_dir, monkeypatch) -> None:
    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    assert held_records(bp, "core-a", "ledger") == {"ledger.jsonl": 0}
    d = service_dir("core-a", "ledger")
    d.mkdir(parents=True)
    (d / "ledger.jsonl").write_bytes(b'{"seq": 1}\n{"seq": 2}\n{"seq": 3, "to')
    assert held_records(bp, "core-a", "ledger") == {"ledger.jsonl": 2}


def test_the_committed_position_only_moves_forward(rds) -> None:
    commit(rds, 40, epoch=1)
    assert not replication_state.advance_committed(rds, replication_state.Committed(
        "ledger", "ledger.jsonl", 1, 39, 1, 39, None, "core-a", 1.0)), "fewer records at the same epoch"
    assert not replication_state.advance_committed(rds, replication_state.Committed(
        "ledger", "ledger.jsonl", 0, 90, 1, 90, None, "core-x", 1.0)), "a stale primary (older epoch)"
    assert replication_state.advance_committed(rds, replication_state.Committed(
        "ledger", "ledger.jsonl", 2, 31, 1, 31, None, "core-b", 1.0, how="rebased")), "a new epoch re-bases it"
    got = replication_state.read_committed(rds, ["ledger"])["ledger"]["ledger.jsonl"]
    assert (got.epoch, got.count, got.node, got.how) == (2, 31, "core-b", "rebased")
    rds.hset(keys.replication_committed("ledger"), "ledger.jsonl", "not json")
    assert replication_state.read_committed(rds, ["ledger"]) == {}
