"""The chain watchdog's decisions at the key level (fakeredis; chains captured instead of sent)."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest

from continuity.blueprint import load_blueprint
from continuity.failover import records
from continuity.state import keys

ROOT = Path(__file__).resolve().parents[2]
NOW = 2_000_000.0


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))
    monkeypatch.setenv("CONTINUITY_PULSE_FILE", str(tmp_path / "pulse_history.jsonl"))
    import workers.failover as wf

    sent: list[dict] = []

    class Captured:
        def __init__(self, ctx: dict) -> None:
            self.ctx = ctx

        def apply_async(self) -> None:
            sent.append(self.ctx)

    monkeypatch.setattr(wf, "build_chain", lambda bp, ctx, now: Captured(ctx.to_dict()))
    return wf, sent


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture(scope="module")
def bp():
    return load_blueprint(ROOT / "ops" / "blueprint.yml")


def _running(client, started: float, done: list[str], pending_started: float | None) -> tuple[str, dict]:
    ctx = {"record_id": "", "service": "ledger", "candidate": "core-b", "fallbacks": [], "old_primary": "core-a",
           "expected_epoch": 1, "epoch": 2, "attempt": 0, "not_before": started,
           "steps": ["fence", "prepare", "promote", "repoint", "verify", "record"]}
    rid = records.open_record(client, ctx, {"detected_at": started}, "detector", started)
    ctx["record_id"] = rid
    records.set_attempt(client, rid, 0, "core-b", 1, ctx)
    t = started
    for step in done:
        records.step_started(client, rid, 0, step, "core-b", t)
        records.step_finished(client, rid, 0, step, True, t + 0.1)
        t += 0.2
    if pending_started is not None:
        records.step_started(client, rid, 0, ctx["steps"][len(done)], "core-b", pending_started)
    return rid, ctx


def test_a_stalled_step_is_sent_again_from_where_it_stopped(env, client, bp) -> None:
    wf, sent = env
    rid, _ = _running(client, NOW - 20, ["fence", "prepare"], pending_started=NOW - 10)
    assert wf.supervise(client, bp, NOW)["resumed"] == [rid]
    assert sent[0]["steps"] == ["promote", "repoint", "verify", "record"]
    # not twice within the stall window
    assert wf.supervise(client, bp, NOW + 1)["resumed"] == []


def test_a_step_that_is_running_or_recent_is_left_alone(env, client, bp) -> None:
    wf, sent = env
    rid, ctx = _running(client, NOW - 20, ["fence", "prepare"], pending_started=NOW - 1)
    assert wf.supervise(client, bp, NOW)["resumed"] == []
    client.set(keys.step_done("ledger", 2, "promote") + ":lock", "x", px=3000)
    assert wf.supervise(client, bp, NOW + 30)["resumed"] == []
    assert sent == []


def test_a_step_with_no_progress_for_long_fails_over_or_escalates(env, client, bp) -> None:
    wf, sent = env
    rid, _ = _running(client, NOW - 120, ["fence", "prepare"], pending_started=NOW - 100)
    assert wf.supervise(client, bp, NOW)["failed"] == [rid]
    rec = records.get_record(client, rid)
    assert rec["outcome"] == "escalated"  # no fallback candidate in the sample fleet
    assert json.loads(client.hget(keys.incidents(), "failover-ledger"))["record"] == rid
    assert sent == []


def test_a_fence_waiting_for_the_old_lease_is_not_resent(env, client, bp) -> None:
    wf, sent = env
    _running(client, NOW - 1, [], pending_started=None)
    assert wf.supervise(client, bp, NOW)["resumed"] == []


def test_bootstrapped_services_get_a_route(env, client, bp) -> None:
    wf, _ = env
    client.set(keys.epoch("ledger"), 1)
    client.set(keys.lease("ledger"), json.dumps({"node": "core-a", "epoch": 1}), px=5000)
    client.set(keys.epoch("keystore"), 3)
    client.set(keys.lease("keystore"), json.dumps({"node": "core-b", "epoch": 2}), px=5000)  # stale holder
    assert wf.reconcile_routes(client, bp, NOW) == ["ledger"]
    assert json.loads(client.get(keys.route("ledger")))["node"] == "core-a"
    assert client.get(keys.route("keystore")) is None
    assert wf.reconcile_routes(client, bp, NOW) == []


def test_no_route_to_a_candidate_whose_chain_still_runs(env, client, bp) -> None:
    # mid-promote: the candidate holds the lease at the new epoch; its start hook may still fail
    wf, _ = env
    _running(client, NOW - 5, ["fence", "prepare"], pending_started=NOW - 1)
    client.set(keys.epoch("ledger"), 2)
    client.set(keys.lease("ledger"), json.dumps({"node": "core-b", "epoch": 2}), px=5000)
    assert wf.reconcile_routes(client, bp, NOW) == []
    assert client.get(keys.route("ledger")) is None


def test_a_promote_given_up_by_another_nodes_watchdog_gives_the_lease_back(env, client, bp, monkeypatch) -> None:
    # the candidate took the lease at epoch 2 and went quiet; the watchdog (not on the candidate) gives up
    wf, _ = env
    from continuity.failover import steps
    from continuity.failover.context import FailoverContext

    ran: list[str] = []
    monkeypatch.setattr(steps.hooks, "run_service_hook", lambda *a, **k: ran.append(a[3]))
    _, ctx = _running(client, NOW - 5, ["fence", "prepare"], pending_started=NOW - 1)
    client.set(keys.epoch("ledger"), 2)
    client.set(keys.lease("ledger"), json.dumps({"node": "core-b", "epoch": 2}), px=5000)
    client.set(keys.lease_holder("ledger"), json.dumps({"node": "core-b", "epoch": 2}))
    steps.undo_promote(client, bp, FailoverContext.from_dict(ctx, bp), local=False)
    assert client.get(keys.lease("ledger")) is None and client.get(keys.lease_holder("ledger")) is None
    assert ran == [], "the stop hook runs only on the candidate"
    client.set(keys.lease("ledger"), json.dumps({"node": "core-b", "epoch": 2}), px=5000)
    steps.undo_promote(client, bp, FailoverContext.from_dict(ctx, bp), local=True)
    assert ran == ["stop"] and client.get(keys.lease("ledger")) is None


def test_a_record_whose_context_names_a_node_outside_the_blueprint_is_left_alone(env, client, bp) -> None:
    wf, sent = env
    rid, ctx = _running(client, NOW - 20, ["fence", "prepare"], pending_started=NOW - 10)
    records.set_attempt(client, rid, 0, "core-b", 1, dict(ctx, candidate="../../etc"))
    assert wf.supervise(client, bp, NOW) == {"resumed": [], "failed": []}
    assert sent == [] and records.get_record(client, rid)["outcome"] == "running"


def test_a_dead_candidate_fails_its_step_at_once_not_after_the_give_up_time(env, client, bp) -> None:
    """The candidate's worker died mid-chain: waiting GIVE_UP_AFTER for a step that will never run there only
    lengthens the outage; the detector's verdict is enough to move on (here: escalate, no fallback declared)."""
    wf, sent = env
    rid, _ = _running(client, NOW - 3, ["fence", "prepare"], pending_started=NOW - 1)
    assert wf.supervise(client, bp, NOW)["failed"] == []  # alive (as far as anyone knows): wait
    client.hset(keys.node_state(), "core-b", json.dumps({"state": "dead"}))
    assert wf.supervise(client, bp, NOW)["failed"] == [rid]
    rec = records.get_record(client, rid)
    promote = next(s for s in rec["steps"] if s["step"] == "promote")
    assert promote["ok"] is False and "candidate core-b is dead" in promote["error"]
    assert rec["outcome"] == "escalated" and sent == []
