"""The split-brain check used by the end-to-end tests must be able to fail: feed it histories with and without."""

from __future__ import annotations

from tests.failover_support import overlaps, role_intervals

P = "continuity_layer."


def ev(seq: int, ts: float, kind: str, node: str, epoch: int) -> dict:
    return {"seq": seq, "ts": ts, "kind": P + kind, "node": node, "service": "ledger", "epoch": epoch}


def test_clean_handover_has_no_overlap() -> None:
    events = [ev(1, 0.0, "detect.role_bootstrapped", "core-a", 1),
              ev(2, 5.0, "failover.service_demoted", "core-a", 1),
              ev(3, 6.0, "failover.fenced", "core-b", 2),
              ev(4, 6.1, "failover.promoted", "core-b", 2)]
    ivs = role_intervals(events, "ledger")
    assert [(n, e, a, b) for n, e, a, b in ivs] == [("core-a", 1, 0.0, 5.0), ("core-b", 2, 6.1, float("inf"))]
    assert overlaps(ivs) == []


def test_promotion_before_the_old_holder_stopped_is_caught() -> None:
    events = [ev(1, 0.0, "detect.role_bootstrapped", "core-a", 1),
              ev(2, 4.0, "failover.promoted", "core-b", 2),  # promoted with no fence, old one still valid
              ev(3, 5.0, "failover.self_demoted", "core-a", 1)]
    bad = overlaps(role_intervals(events, "ledger"))
    assert len(bad) == 1 and {bad[0][0][0], bad[0][1][0]} == {"core-a", "core-b"}


def test_fence_ends_the_old_epoch_even_without_a_demotion_event() -> None:
    events = [ev(1, 0.0, "failover.promoted", "core-a", 3),
              ev(2, 9.0, "failover.fenced", "core-b", 4),
              ev(3, 9.5, "failover.promoted", "core-b", 4)]
    assert overlaps(role_intervals(events, "ledger")) == []
