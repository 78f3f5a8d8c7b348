"""The failover chain context: typed, the same JSON on the wire, and nothing outside the blueprint gets in."""

from __future__ import annotations

import json

import pytest

from continuity.blueprint import load_blueprint
from continuity.failover.context import FailoverContext, InvalidContext
from continuity.failover.planner import FailoverPlan
from tests.helpers import ROOT

BP = load_blueprint(ROOT / "ops" / "blueprint.yml")
WIRE = {"record_id": "20240101T000000-ledger-abc123", "service": "ledger", "kind": "failover",
        "candidate": "core-b", "fallbacks": ["sat-1"], "old_primary": "core-a", "expected_epoch": 3, "epoch": 4,
        "attempt": 0, "not_before": 1700000000.5, "steps": ["fence", "prepare", "promote", "repoint", "verify",
                                                           "record"]}


def test_the_wire_format_is_unchanged() -> None:
    ctx = FailoverContext.from_dict(WIRE, BP)
    assert ctx.to_dict() == WIRE
    assert list(ctx.to_dict()) == list(WIRE)  # same keys, same order as the dict the chain always carried
    assert FailoverContext.from_dict(json.loads(json.dumps(ctx.to_dict())), BP) == ctx
    assert ctx.steps == tuple(WIRE["steps"]) and ctx.fallbacks == ("sat-1",)


def test_unknown_keys_are_ignored_and_prepare_travels_only_when_set() -> None:
    ctx = FailoverContext.from_dict(dict(WIRE, future_field=1, prepare="backup"), BP)
    assert ctx.prepare == "backup" and ctx.to_dict() == dict(WIRE, prepare="backup")


@pytest.mark.parametrize("field, value, words", [
    ("candidate", "core-z", "not a node of the blueprint"),
    ("candidate", "../../etc", "not a valid node name"),
    ("candidate", "/var/lib/x", "not a valid node name"),
    ("candidate", "core-b\n", "not a valid node name"),
    ("old_primary", "..", "not a valid node name"),
    ("fallbacks", ["sat-1", "evil/../x"], "fallbacks[1]"),
    ("fallbacks", "sat-1", "must be a list"),
    ("service", "payroll", "not a service of the blueprint"),
    ("service", None, "service is missing"),
    ("epoch", "four", "epoch must be an integer"),
    ("epoch", True, "epoch must be an integer"),
    ("attempt", -1, "attempt must be a non-negative integer"),
    ("steps", ["fence", "rm -rf"], "unknown step"),
    ("kind", "takeover", "kind must be one of"),
    ("record_id", "a b", "invalid record_id"),
    ("not_before", "soon", "not_before must be a number"),
    ("prepare", "wipe", "prepare must be one of"),
])
def test_a_crafted_context_is_rejected_with_a_clear_error(field: str, value: object, words: str) -> None:
    with pytest.raises(InvalidContext, match=words.replace("[", r"\[").replace("]", r"\]")):
        FailoverContext.from_dict(dict(WIRE, **{field: value}), BP)


def test_without_a_blueprint_the_id_syntax_still_refuses_paths() -> None:
    assert FailoverContext.from_dict(dict(WIRE, candidate="core-z")).candidate == "core-z"
    with pytest.raises(InvalidContext, match="not a valid node name"):
        FailoverContext.from_dict(dict(WIRE, candidate="../core-a"))
    with pytest.raises(InvalidContext, match="JSON object"):
        FailoverContext.from_dict(["ledger"])


def test_the_next_attempt_moves_the_epoch_and_drops_demote() -> None:
    ctx = FailoverContext.from_dict(dict(WIRE, kind="switchover", steps=["demote", *WIRE["steps"]]), BP)
    nxt = ctx.next_attempt("sat-1", (), 5, now=10.0)
    assert (nxt.candidate, nxt.fallbacks, nxt.attempt, nxt.expected_epoch, nxt.epoch, nxt.not_before) == (
        "sat-1", (), 1, 5, 6, 10.0)
    assert nxt.steps == tuple(WIRE["steps"]) and nxt.old_primary == "core-a" and nxt.record_id == ctx.record_id
    assert ctx.attempt == 0  # immutable: the failed attempt's context is unchanged
    assert ctx.from_step(3).steps == ("promote", "repoint", "verify", "record")


def test_the_shell_builds_the_context_from_a_plan() -> None:
    from workers.failover import _context

    plan = FailoverPlan(service="ledger", old_primary="core-a", candidate="core-b", fallbacks=("sat-1",),
                        not_before=1700000000.5)
    assert _context(plan, WIRE["record_id"], 3).to_dict() == WIRE


def test_a_failover_task_refuses_a_crafted_context_before_any_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    import fakeredis

    from workers import failover, task

    client = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(task, "redis_client", lambda **options: client)
    monkeypatch.setattr(task, "blueprint", lambda: BP)
    for crafted in (dict(WIRE, candidate="../../etc"), dict(WIRE, candidate="mallory"),
                    dict(WIRE, old_primary="/root")):
        with pytest.raises(InvalidContext):
            failover.prepare.apply(args=[crafted], throw=True)
    assert client.keys("*") == []  # nothing recorded, nothing marked, no directory touched
