"""Prepare uses what survives (issue 10 item 6): real replicators on loopback, a real Redis, the prepare step.

The old primary core-a is gone (its directory still on this one disk in the
test, with the most records: nothing may be taken from it). The candidate
core-b is behind; core-c, a standby, holds more. Prepare asks core-c's
replicator for its copy over the network, appends what it lacks (checked by the
hash chain), and records the source, the position it starts from, and the loss
against the committed position.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.blueprint import Blueprint, load_blueprint
from continuity.failover import steps
from continuity.failover.context import FailoverContext
from continuity.replication.node import Replicator
from continuity.state import keys
from continuity.state import replication as replication_state
from continuity.state.heartbeats import SecretRing, ensure_node_key
from tests.failover_support import make_blueprint

NODES = ("core-a", "core-b", "core-c")


@pytest.fixture
def fleet(tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Blueprint:
    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    monkeypatch.setenv("CONTINUITY_BACKUP_CONFIG", str(tmp_path / "no-backup.yml"))
    for n in NODES:
        ensure_node_key(n)
    return load_blueprint(make_blueprint(tmp_path, ("ledger",), third_node=True))


@pytest.fixture
def reps() -> Iterator[list[Replicator]]:
    made: list[Replicator] = []
    yield made
    for r in made:
        r.stop()


def ledger(state: Path, node: str) -> Path:
    return state / "nodes" / node / "ledger" / "ledger.jsonl"


def write(path: Path, seqs: range, epoch: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        for s in seqs:
            fh.write(json.dumps({"seq": s, "epoch": epoch, "ts": 1000.0 + s}, sort_keys=True).encode() + b"\n")


def seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_text().splitlines()] if path.exists() else []


def serve(bp: Blueprint, node: str, rds, reps: list[Replicator]) -> Replicator:
    r = Replicator(bp, node, rds, SecretRing())
    r.services = []  # it follows nobody: only its copy, as it is, answers fetches
    reps.append(r.start())
    return r


def commit(rds, count: int) -> None:
    replication_state.advance_committed(rds, replication_state.Committed(
        "ledger", "ledger.jsonl", 1, count, 1, count, 1000.0 + count, "core-a", 2000.0))


def ctx(bp: Blueprint, kind: str = "failover") -> FailoverContext:
    return FailoverContext.from_dict({"service": "ledger", "candidate": "core-b", "old_primary": "core-a",
                                      "epoch": 2, "record_id": "r-survivors", "kind": kind}, bp)


def test_the_freshest_reachable_standbys_copy_is_fetched_and_the_loss_is_measured(fleet, rds, state_dir,
                                                                                  reps) -> None:
    write(ledger(state_dir, "core-a"), range(1, 61))  # the lost primary's disk: never a source
    write(ledger(state_dir, "core-b"), range(1, 21))
    write(ledger(state_dir, "core-c"), range(1, 51))
    commit(rds, 60)
    serve(fleet, "core-c", rds, reps)
    out = steps.prepare(rds, fleet, ctx(fleet))
    assert out["source"] == "standby" and out["from"] == "core-c" and out["mode"] == "fetch", out
    assert out["fetch"]["start"] == 20 and out["fetch"]["end"] == 50 and out["fetch"]["records"] == 30
    assert seqs(ledger(state_dir, "core-b")) == list(range(1, 51))
    assert out["starts_from"] == {"records": 50, "last_seq": 50}
    assert out["committed"]["records"] == 60
    assert (out["loss_records"], out["loss_seconds"]) == (10, 10.0)
    rebased = replication_state.read_committed(rds, ["ledger"])["ledger"]["ledger.jsonl"]
    assert (rebased.epoch, rebased.count, rebased.node) == (2, 50, "core-b")


def test_an_own_replica_holding_everything_committed_asks_nobody(fleet, rds, state_dir, reps) -> None:
    write(ledger(state_dir, "core-b"), range(1, 41))
    write(ledger(state_dir, "core-c"), range(1, 51))  # more than committed (unacknowledged): not needed
    commit(rds, 40)
    serve(fleet, "core-c", rds, reps)
    out = steps.prepare(rds, fleet, ctx(fleet))
    assert out["source"] == "replica" and out["loss_records"] == 0 and out["loss_seconds"] == 0.0
    assert seqs(ledger(state_dir, "core-b")) == list(range(1, 41))


def test_a_tail_the_standby_does_not_have_is_kept_aside_not_merged(fleet, rds, state_dir, reps) -> None:
    write(ledger(state_dir, "core-b"), range(1, 11))
    write(ledger(state_dir, "core-b"), range(500, 503), epoch=0)  # written once by a primary nobody followed
    write(ledger(state_dir, "core-c"), range(1, 31))
    commit(rds, 30)
    serve(fleet, "core-c", rds, reps)
    out = steps.prepare(rds, fleet, ctx(fleet))
    assert out["source"] == "standby" and out["fetch"]["cut_records"] == 3
    assert seqs(ledger(state_dir, "core-b")) == list(range(1, 31))
    kept = Path(out["fetch"]["kept"])
    assert kept.is_relative_to(state_dir / "nodes" / "core-b") and kept.read_text().count("\n") == 3


def test_with_no_standby_reachable_the_own_copy_is_kept_and_the_loss_said(fleet, rds, state_dir) -> None:
    write(ledger(state_dir, "core-a"), range(1, 61))
    write(ledger(state_dir, "core-b"), range(1, 21))
    write(ledger(state_dir, "core-c"), range(1, 51))  # its replicator is down: unreachable
    commit(rds, 60)
    out = steps.prepare(rds, fleet, ctx(fleet))
    assert out["source"] == "replica" and "core-c" in out["unreachable"], out
    assert seqs(ledger(state_dir, "core-b")) == list(range(1, 21))
    assert (out["loss_records"], out["loss_seconds"]) == (40, 40.0)


def test_the_loss_window_starts_when_the_copy_last_held_everything_not_at_its_newest_record(fleet, rds,
                                                                                          state_dir) -> None:
    """After a quiet spell the newest record held is older than the loss: the standby knew, from the primary's
    keepalives, that it held everything until moments before the fault. Only that primary and epoch's word
    counts (a copy synced with another primary says nothing about this one's acknowledged tail)."""
    write(ledger(state_dir, "core-b"), range(1, 21))  # newest held: ts 1020
    commit(rds, 60)  # newest acknowledged: ts 1060
    publish = [replication_state.Applied("ledger", "ledger.jsonl", "core-b", 1, 20, 20, None, 1, "core-a", 1059.0,
                                         1057.5)]
    replication_state.publish_applied(rds, publish)
    out = steps.prepare(rds, fleet, ctx(fleet))
    assert out["source"] == "replica" and (out["loss_records"], out["loss_seconds"]) == (40, 2.5), out
    rds.delete(keys.replication_committed("ledger"))
    commit(rds, 60)
    replication_state.publish_applied(rds, [replication_state.Applied(
        "ledger", "ledger.jsonl", "core-b", 1, 20, 20, None, 1, "core-c", 1059.0, 1057.5)])
    out = steps.prepare(rds, fleet, ctx(fleet))
    assert (out["loss_records"], out["loss_seconds"]) == (40, 40.0), out


def test_the_old_primary_is_asked_over_the_network_only_in_a_switchover(fleet, rds, state_dir, reps) -> None:
    """A switchover's old primary demoted itself and is alive: its replicator serves its copy like a standby's,
    so an async tail it had not shipped yet is not lost. In a failover it is not asked, even when it answers."""
    write(ledger(state_dir, "core-a"), range(1, 46))
    write(ledger(state_dir, "core-b"), range(1, 41))
    commit(rds, 45)
    serve(fleet, "core-a", rds, reps)
    out = steps.prepare(rds, fleet, ctx(fleet))
    assert out["source"] == "replica" and out["loss_records"] == 5 and "core-a" not in out.get("unreachable", {})
    assert seqs(ledger(state_dir, "core-b")) == list(range(1, 41))
    rds.delete(keys.replication_committed("ledger"))  # the first prepare re-based it at epoch 2
    commit(rds, 45)
    out = steps.prepare(rds, fleet, ctx(fleet, "switchover"))
    assert out["source"] == "standby" and out["from"] == "core-a" and out["loss_records"] == 0, out
    assert seqs(ledger(state_dir, "core-b")) == list(range(1, 46))


def test_only_a_node_of_the_placement_may_fetch_a_copy(fleet, rds, state_dir, reps) -> None:
    """A fetch skips the lease check (any standby's copy may serve a candidate), not the rest of the hello: a node
    outside the service's placement is refused before anything is read, and gets nothing."""
    from continuity.replication import catchup
    from continuity.replication.ledger import LedgerLog

    ensure_node_key("sat-1")
    write(ledger(state_dir, "core-c"), range(1, 11))
    serve(fleet, "core-c", rds, reps)
    copy = LedgerLog(state_dir / "nodes" / "sat-1" / "ledger" / "ledger.jsonl", writable=True).open()
    try:
        offers, unreachable = catchup.survey(catchup.context(fleet, "sat-1", rds), "ledger", "ledger.jsonl", copy,
                                             ["core-c"])
        assert offers == [] and "core-c" in unreachable and copy.count == 0
        offers, _ = catchup.survey(catchup.context(fleet, "core-b", rds), "ledger", "ledger.jsonl", copy,
                                   ["core-c"])  # the same copy, asked for by a placement node, is offered
        assert [o.head.count for o in offers] == [10]
        for o in offers:
            o.close()
    finally:
        copy.close()
