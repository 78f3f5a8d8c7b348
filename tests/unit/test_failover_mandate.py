"""The operator mandate of a switchover / forced failover: bound to one record, one service, one kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuity.failover.context import FailoverContext, InvalidContext, check_against_record
from continuity.failover.mandate import NoMandate, check, grant
from continuity.signing import create_key

NOW = 1_700_000_000.0
FOR = {"record_id": "ledger-1", "service": "ledger", "kind": "switchover", "old_primary": "core-a",
       "target": "core-b"}


@pytest.fixture
def op(tmp_path: Path):
    return create_key(tmp_path / "op.ed25519", "operator", "alice")


def test_a_mandate_counts_only_for_what_it_was_made_for(op) -> None:
    m = grant(op, "ledger-1", "ledger", "switchover", "core-b", "core-a", NOW)
    trusted = {op.key_id: op.public}
    assert check(m.to_dict(), **FOR, operators=trusted, now=NOW) == m
    for field, other in (("record_id", "ledger-2"), ("service", "keystore"), ("kind", "forced"),
                         ("old_primary", "core-b"), ("target", "sat-1")):
        with pytest.raises(NoMandate, match="another failover"):
            check(m.to_dict(), **{**FOR, field: other}, operators=trusted, now=NOW)
    with pytest.raises(NoMandate, match="not a trusted operator key"):
        check(m.to_dict(), **FOR, operators={}, now=NOW)
    with pytest.raises(NoMandate, match="forged or altered"):
        check({**m.to_dict(), "target": "sat-1"}, **{**FOR, "target": "sat-1"}, operators=trusted, now=NOW)
    with pytest.raises(NoMandate, match="in the future"):
        check(m.to_dict(), **FOR, operators=trusted, now=NOW - 3600)


def test_an_automatic_failover_needs_none_a_manual_move_does() -> None:
    assert check(None, **{**FOR, "kind": "failover"}, operators={}, now=NOW) is None
    with pytest.raises(NoMandate, match="needs an operator's mandate"):
        check(None, **FOR, operators={}, now=NOW)


def test_the_context_must_be_the_one_its_record_opened() -> None:
    ctx = FailoverContext(record_id="ledger-1", service="ledger", candidate="core-b", epoch=4, expected_epoch=3,
                          old_primary="core-a", kind="switchover")
    meta = {"service": "ledger", "kind": "switchover", "old_primary": "core-a"}
    attempt = {"candidate": "core-b", "expected_epoch": 3}
    check_against_record(ctx, meta, attempt)
    for bad_meta, bad_attempt, why in (
            (None, attempt, "does not exist"), ({**meta, "kind": "failover"}, attempt, "kind"),
            ({**meta, "old_primary": "core-c"}, attempt, "old_primary"), (meta, None, "no attempt 0"),
            (meta, {**attempt, "candidate": "core-c"}, "candidate"), (meta, {**attempt, "expected_epoch": 7}, "epoch")):
        with pytest.raises(InvalidContext, match=why):
            check_against_record(ctx, bad_meta, bad_attempt)
