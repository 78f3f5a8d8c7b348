"""Postmortem action items: the signed trail counts only what verifies, in place, by a key allowed its step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from continuity import actions
from continuity.config import parse_text
from continuity.signing import create_key
from continuity.stewardship import parse_stewardship

NOW = 1_800_000_000.0


@pytest.fixture
def keys(tmp_path: Path):
    return {n: create_key(tmp_path / n / "operator.ed25519", "operator", n) for n in ("alice", "bob", "mallory")}


@pytest.fixture
def stewards(keys):
    members = "\n".join(f'    - {{name: {n}, key: "{keys[n].public.line()}"}}' for n in ("alice", "bob"))
    text = f"stewardship:\n  group: circle\n  approvals_needed: 1\n  members:\n{members}\n"
    return parse_stewardship(parse_text(text, "stewards.yml"))


def added(key, due: float = NOW + 86400) -> actions.Statement:
    body = {"record": "drill-1", "title": "alert on lag", "owner": "carol", "due": due}
    return actions.sign(key, "A-1", "add", body, "", NOW)


def then(key, prev: actions.Statement, op: str, note: str = "") -> actions.Statement:
    return actions.sign(key, "A-1", op, {"note": note}, prev.digest(), NOW + 1)


def fold(stmts, stewards=None):
    return actions.fold("A-1", [s.to_json() for s in stmts], stewards)


def test_a_signed_trail_gives_owner_due_approvals_and_closure(keys, stewards) -> None:
    a = added(keys["mallory"])  # anyone with an operator key may add an item
    ok = then(keys["bob"], a, "approve", "right fix")
    c = then(keys["alice"], ok, "close", "PR 42")
    item = fold([a, ok, c], stewards)
    assert item is not None and item.owner == "carol" and item.due == NOW + 86400 and item.record == "drill-1"
    assert item.created_by == keys["mallory"].key_id
    assert [x["name"] for x in item.approvals] == ["bob"] and item.closed["name"] == "alice"
    assert item.closed["note"] == "PR 42" and item.status == "closed" and not item.ignored
    assert not item.overdue(NOW + 10**6), "a closed item is never overdue"


def test_an_altered_statement_counts_for_nothing(keys, stewards) -> None:
    a = added(keys["alice"])
    raw = json.loads(a.to_json())
    raw["body"]["due"] = NOW + 10**8  # someone with Redis access pushes the due date out
    assert actions.fold("A-1", [json.dumps(raw)], stewards) is None
    c = then(keys["alice"], a, "close")
    forged = json.loads(c.to_json())
    forged["body"]["note"] = "done, honest"
    item = actions.fold("A-1", [a.to_json(), json.dumps(forged)], stewards)
    assert item is not None and item.closed is None and "signature does not match" in item.ignored[0]


def test_only_stewards_approve_and_close_when_stewards_are_declared(keys, stewards) -> None:
    a = added(keys["alice"], due=NOW - 1)
    item = fold([a, then(keys["mallory"], a, "approve"), then(keys["mallory"], a, "close")], stewards)
    assert item is not None and item.closed is None and item.approvals == []
    assert [w.split(":")[0] for w in item.ignored] == [f"approve by key {keys['mallory'].key_id}",
                                                        f"close by key {keys['mallory'].key_id}"]
    assert actions.overdue([item], NOW) == [item]
    # without a stewards file any operator key closes, but an approval has nobody to come from
    bare = fold([a, then(keys["mallory"], a, "approve"), then(keys["mallory"], a, "close")])
    assert bare is not None and bare.approvals == [] and bare.closed is not None


def test_a_step_out_of_place_does_not_count(keys, stewards) -> None:
    a = added(keys["alice"])
    ok = then(keys["bob"], a, "approve")
    stale = then(keys["alice"], a, "close")  # chained to the add, but the approve came first
    item = fold([a, ok, stale], stewards)
    assert item is not None and item.closed is None and "out of place" in item.ignored[0]
    other = actions.sign(keys["alice"], "A-2", "close", {"note": ""}, a.digest(), NOW)  # another item's close
    assert "made for item A-2" in fold([a, other], stewards).ignored[0]
    c = then(keys["alice"], ok, "close")
    late = then(keys["bob"], c, "approve")
    item = fold([a, ok, c, late], stewards)
    assert item.closed is not None and "after the item was closed" in item.ignored[0]


def test_two_steps_racing_for_the_same_place_cannot_both_be_stored(rds, keys) -> None:
    """Two stewards closing at once both chain to the same head: the second write is refused, never overwrites."""
    from continuity.state import actions as action_state

    a = added(keys["alice"])
    assert action_state.append(rds, "A-1", 0, a.to_json())
    assert not action_state.append(rds, "A-1", 0, added(keys["bob"]).to_json()), "an item id is added once"
    first, second = then(keys["alice"], a, "close", "mine"), then(keys["bob"], a, "close", "no, mine")
    assert action_state.append(rds, "A-1", 1, first.to_json())
    assert not action_state.append(rds, "A-1", 1, second.to_json())
    assert action_state.read(rds, "A-1") == [a.to_json(), first.to_json()]
    assert actions.load(rds, None)[0].closed["note"] == "mine"
