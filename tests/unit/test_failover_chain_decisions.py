"""The chain decisions of the core, without Redis or Celery: the watchdog's verdict and the next candidate."""

from __future__ import annotations

import json

import pytest

from continuity.blueprint import load_blueprint
from continuity.failover import retry
from continuity.failover.context import FailoverContext, InvalidContext
from continuity.failover.watchdog import GIVE_UP_AFTER, STALL_AFTER, decide, pending_step
from continuity.state.failover_records import RawRecord
from tests.helpers import ROOT

BP = load_blueprint(ROOT / "ops" / "blueprint.yml")
STEPS = ["fence", "prepare", "promote", "repoint", "verify", "record"]
CTX = {"record_id": "r1", "service": "ledger", "kind": "failover", "candidate": "core-b", "fallbacks": [],
       "old_primary": "core-a", "expected_epoch": 1, "epoch": 2, "attempt": 0, "not_before": 100.0,
       "steps": STEPS}
TIMING = {"lease_ttl": 3.0, "lease_margin": 1.0}


def _record(done: list[str], *, pending_start: float | None = None, failed_end: float | None = None,
            started: float = 100.0, outcome: str = "running", ctx: dict | None = None) -> RawRecord:
    fields = {"meta": json.dumps({"started": started}), "outcome": outcome,
              "c:0": json.dumps(ctx if ctx is not None else CTX)}
    t = started
    for step in done:
        fields[f"s:0:{step}"] = json.dumps({"start": t})
        fields[f"e:0:{step}"] = json.dumps({"end": t + 0.1, "ok": True})
        t += 0.2
    nxt = STEPS[len(done)] if len(done) < len(STEPS) else None
    if nxt and pending_start is not None:
        fields[f"s:0:{nxt}"] = json.dumps({"start": pending_start})
    if nxt and failed_end is not None:
        fields[f"e:0:{nxt}"] = json.dumps({"end": failed_end, "ok": False})
    return RawRecord(fields)


def test_the_pending_step_is_the_first_not_succeeded_of_the_newest_attempt() -> None:
    p = pending_step(_record(["fence", "prepare"]), BP)
    assert p is not None and (p.attempt, p.step, p.index) == (0, "promote", 2)
    assert pending_step(_record(STEPS), BP) is None
    assert pending_step(_record([], outcome="succeeded"), BP) is None
    assert pending_step(RawRecord({"meta": "{}", "outcome": "running"}), BP) is None  # no context stored


def test_a_stored_context_naming_a_node_outside_the_blueprint_is_refused() -> None:
    with pytest.raises(InvalidContext, match="not a node of the blueprint"):
        pending_step(_record([], ctx=dict(CTX, candidate="mallory")), BP)
    with pytest.raises(InvalidContext, match="not a valid node name"):
        pending_step(_record([], ctx=dict(CTX, candidate="../../tmp")), BP)


@pytest.mark.parametrize("idle, action", [(1.0, "wait"), (STALL_AFTER, "resend"), (GIVE_UP_AFTER - 1, "resend"),
                                          (GIVE_UP_AFTER, "give_up")])
def test_idle_time_decides_resend_or_give_up(idle: float, action: str) -> None:
    rec = _record(["fence", "prepare"], pending_start=200.0)
    p = pending_step(rec, BP)
    assert p is not None
    verdict = decide(rec, p, busy=False, now=200.0 + idle, **TIMING)
    assert verdict.action == action and verdict.idle == pytest.approx(idle)
    if action == "resend":
        assert verdict.resume is not None and verdict.resume.steps == ("promote", "repoint", "verify", "record")
    if action == "give_up":
        assert verdict.reason == f"no progress for {idle:.0f}s"


def test_a_dead_candidate_gives_up_at_once() -> None:
    rec = _record(["fence", "prepare"], pending_start=200.0)
    p = pending_step(rec, BP)
    assert p is not None
    verdict = decide(rec, p, busy=False, now=201.0, candidate_dead=True, **TIMING)
    assert verdict.action == "give_up" and verdict.reason == "candidate core-b is dead"
    assert decide(rec, p, busy=False, now=201.0, **TIMING).action == "wait"


def test_a_running_or_handled_step_is_left_alone() -> None:
    rec = _record(["fence", "prepare"], pending_start=100.0)
    p = pending_step(rec, BP)
    assert p is not None
    assert decide(rec, p, busy=True, now=1000.0, **TIMING).action == "wait"
    failed = _record(["fence", "prepare"], pending_start=100.0, failed_end=101.0)
    p = pending_step(failed, BP)
    assert p is not None and decide(failed, p, busy=False, now=1000.0, **TIMING).action == "wait"


def test_a_fence_waiting_for_the_old_lease_is_not_idle() -> None:
    rec = _record([], pending_start=100.0)
    p = pending_step(rec, BP)
    assert p is not None and p.step == "fence"
    # the fence may wait 2 * ttl + margin = 7 s after not_before before anyone calls it stalled
    assert decide(rec, p, busy=False, now=100.0 + 7 + STALL_AFTER - 0.1, **TIMING).action == "wait"
    assert decide(rec, p, busy=False, now=100.0 + 7 + STALL_AFTER, **TIMING).action == "resend"


def test_next_candidate_is_the_first_live_fallback() -> None:
    ctx = FailoverContext.from_dict(dict(CTX, fallbacks=["core-a", "sat-1"]), BP)
    states = {"core-a": {"state": "dead"}, "sat-1": {"state": "alive"}}
    assert retry.next_candidate(ctx, "promote", "boom", states) == retry.Retry("sat-1", ())
    assert retry.next_candidate(ctx, "prepare", "boom", {"core-a": "alive", "sat-1": "alive"}) == retry.Retry(
        "core-a", ("sat-1",))
    assert retry.next_candidate(ctx, "verify", "boom", {}) == retry.Escalate(
        "verify failed on core-b (boom) and no other candidate is alive")


@pytest.mark.parametrize("step", retry.NOT_THE_CANDIDATES_FAULT)
def test_a_step_that_is_not_the_candidates_fault_escalates(step: str) -> None:
    ctx = FailoverContext.from_dict(dict(CTX, fallbacks=["core-a"]), BP)
    assert retry.next_candidate(ctx, step, "redis down", {"core-a": "alive"}) == retry.Escalate(
        f"{step} failed: redis down")


def test_undo_only_after_the_candidate_may_have_started() -> None:
    assert retry.undo_promote("promote") and retry.undo_promote("verify")
    assert not retry.undo_promote("prepare")
