"""Who is behind the role's committed position, and by how much (pure: :mod:`continuity.services.survivors`)."""

from __future__ import annotations

from continuity.services.survivors import as_record, records_short, shortfall, shortfalls
from continuity.state.replication import Applied, Committed


def c(count: int, epoch: int = 3, source: str = "ledger.jsonl") -> Committed:
    return Committed("ledger", source, epoch, count, count * 10, count, 100.0, "core-a", 100.0)


def a(node: str, count: int | None, source: str = "ledger.jsonl") -> Applied:
    return Applied("ledger", source, node, 0, count, None, None, 3, "core-a", 100.0)


def test_a_node_holding_fewer_records_than_committed_is_behind_and_says_by_how_much() -> None:
    committed = {"ledger.jsonl": c(40)}
    assert shortfall({"ledger.jsonl": 40}, committed) is None
    assert shortfall({"ledger.jsonl": 41}, committed) is None
    why = shortfall({"ledger.jsonl": 39}, committed)
    assert why is not None and "holds 39 of the 40 records committed at epoch 3" in why
    assert "holds 0 of the 40" in (shortfall({}, committed) or ""), "no file at all: the replaced machine"
    assert "holds 0 of the 40" in (shortfall({"ledger.jsonl": None}, committed) or "")
    assert shortfall({}, {}) is None, "nothing committed: nothing to be behind"
    assert shortfall({}, {"ledger.jsonl": c(0)}) is None


def test_every_source_counts() -> None:
    committed = {"ledger.jsonl": c(40), "audit.jsonl": c(5, source="audit.jsonl")}
    why = shortfall({"ledger.jsonl": 40, "audit.jsonl": 4}, committed)
    assert why is not None and "audit.jsonl" in why and "ledger.jsonl" not in why
    assert records_short({"ledger.jsonl": 38, "audit.jsonl": 4}, committed) == 3


def test_shortfalls_from_published_positions() -> None:
    committed = {"ledger.jsonl": c(40)}
    applied = [a("core-b", 40), a("core-c", 31), a("core-c", 12), a("core-x", 99)]
    assert shortfalls(("core-a", "core-b", "core-c"), applied, committed) == {"core-a": 40, "core-b": 0, "core-c": 9}
    assert shortfalls(("core-b",), [a("core-b", None)], committed) == {"core-b": 40}
    assert shortfalls(("core-b", "core-c"), applied, {}) == {}


def test_as_record() -> None:
    assert as_record({"ledger.jsonl": c(7)}) == {"ledger.jsonl": {"epoch": 3, "count": 7, "last_seq": 7}}
