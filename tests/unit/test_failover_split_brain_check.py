"""The split-brain checks used by the end-to-end tests must be able to fail: feed them histories with and without.

Two checks: the code's own account (pulse events, fence ends a term) and what the service instances
actually accepted (their ledgers' records: node, epoch, instance, time of acceptance).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.failover_support import accept_overlaps, accepted_windows, overlaps, role_intervals

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


# --- what the instances accepted ----------------------------------------------------------------------------------
def write(state: Path, node: str, recs: list[tuple[int, int, str, str, float]]) -> None:
    """Records (seq, epoch, accepting node, instance, ts) into ``node``'s ledger file."""
    d = state / "nodes" / node / "ledger"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "ledger.jsonl", "a") as fh:
        for seq, epoch, by, inst, ts in recs:
            fh.write(json.dumps({"seq": seq, "epoch": epoch, "node": by, "instance": inst, "ts": ts}) + "\n")


def test_a_clean_handover_in_the_ledgers_has_no_overlap(tmp_path: Path) -> None:
    a = [(1, 1, "core-a", "a1", 1.0), (2, 1, "core-a", "a1", 2.0), (3, 1, "core-a", "a1", 3.0)]
    write(tmp_path, "core-a", a)
    write(tmp_path, "core-b", a[:2] + [(4, 2, "core-b", "b1", 5.0), (5, 2, "core-b", "b1", 6.0)])  # copied + own
    wins = accepted_windows(tmp_path, "ledger")
    assert [(w.node, w.epoch, w.first, w.last, w.writes) for w in wins] == [
        ("core-a", 1, 1.0, 3.0, 3), ("core-b", 2, 5.0, 6.0, 2)]
    assert accept_overlaps(wins) == []


def test_an_old_primary_accepting_after_the_new_one_began_is_caught(tmp_path: Path) -> None:
    # core-a@1 kept accepting (seq 5 at t=5.5) after core-b@2 took its first write at t=5.0: only core-a's own
    # file shows it, since the failover had already copied core-a's ledger away
    write(tmp_path, "core-a", [(1, 1, "core-a", "a1", 1.0), (5, 1, "core-a", "a1", 5.5)])
    write(tmp_path, "core-b", [(1, 1, "core-a", "a1", 1.0), (4, 2, "core-b", "b1", 5.0), (6, 2, "core-b", "b1", 6.0)])
    (bad,) = accept_overlaps(accepted_windows(tmp_path, "ledger"))
    assert {(bad[0].node, bad[0].epoch), (bad[1].node, bad[1].epoch)} == {("core-a", 1), ("core-b", 2)}


def test_two_instances_of_one_epoch_on_one_node_overlapping_are_caught(tmp_path: Path) -> None:
    write(tmp_path, "core-a", [(1, 1, "core-a", "p1", 1.0), (2, 1, "core-a", "p2", 1.5), (3, 1, "core-a", "p1", 2.0)])
    (bad,) = accept_overlaps(accepted_windows(tmp_path, "ledger"))
    assert {bad[0].instance, bad[1].instance} == {"p1", "p2"}
    # one after the other (a local restart) is fine
    write(tmp_path, "core-b", [(7, 1, "core-b", "q1", 10.0), (8, 1, "core-b", "q2", 11.0)])
    assert len(accept_overlaps(accepted_windows(tmp_path, "ledger"))) == 1
