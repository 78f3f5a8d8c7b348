"""Redis down or failing over vs this node cut off: the pure decision (continuity/detect/outage.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from continuity.detect.outage import CUT_OFF, REDIS_DOWN, classify, must_stop


@dataclass
class Sentinels:
    answered: int
    failing_over: bool


@pytest.mark.parametrize("symptom", ["refused", "busy"])
def test_an_answer_from_the_redis_side_means_redis_is_down(symptom: str) -> None:
    assert classify(symptom).cause == REDIS_DOWN
    # a refusal is trusted even while the sentinels still call the master healthy (they need their
    # down-after time to notice a dead master)
    assert classify(symptom, Sentinels(3, False)).cause == REDIS_DOWN


@pytest.mark.parametrize("symptom", ["timeout", "reset", "other", "no-master"])
def test_silence_means_cut_off_unless_the_sentinels_see_a_failover(symptom: str) -> None:
    assert classify(symptom).cause == CUT_OFF
    assert classify(symptom, Sentinels(0, False)).cause == CUT_OFF, "no sentinel answered"
    assert classify(symptom, Sentinels(2, False)).cause == CUT_OFF, "the sentinels reach a master we cannot"
    assert classify(symptom, Sentinels(1, True)).cause == REDIS_DOWN, "a failover is under way"


LIMIT, TOLERANCE = 2.25, 60.0


def test_within_the_renewal_limit_nothing_to_decide() -> None:
    assert must_stop(now=102.25, renewed_at=100.0, down_at=None, limit=LIMIT, tolerance=TOLERANCE) is None


def test_cut_off_stops_after_the_renewal_limit() -> None:
    why = must_stop(now=102.26, renewed_at=100.0, down_at=None, limit=LIMIT, tolerance=TOLERANCE)
    assert why is not None and "not renewed" in why


def test_redis_down_is_ridden_out_while_the_proof_is_fresh() -> None:
    # a Sentinel promotion of 3 s, or a 5 s restart: the latest failed attempt (0.25 s ago) was refused
    for now in (103.0, 105.0, 110.0):
        assert must_stop(now, renewed_at=100.0, down_at=now - 0.25, limit=LIMIT, tolerance=TOLERANCE) is None


def test_a_stale_proof_that_redis_was_down_counts_like_a_renewal() -> None:
    """Attempts that stall (a frozen process) do not keep a primary alive: the last proof ages like a renewal."""
    assert must_stop(104.0, renewed_at=100.0, down_at=102.0, limit=LIMIT, tolerance=TOLERANCE) is None
    why = must_stop(104.3, renewed_at=100.0, down_at=102.0, limit=LIMIT, tolerance=TOLERANCE)
    assert why is not None and "last seen down" in why


def test_a_proof_older_than_the_last_renewal_proves_nothing() -> None:
    assert must_stop(103.0, renewed_at=100.0, down_at=99.0, limit=LIMIT, tolerance=TOLERANCE) is not None


def test_no_outage_is_ridden_out_past_the_tolerance() -> None:
    assert must_stop(159.0, renewed_at=100.0, down_at=158.9, limit=LIMIT, tolerance=TOLERANCE) is None
    why = must_stop(160.5, renewed_at=100.0, down_at=160.4, limit=LIMIT, tolerance=TOLERANCE)
    assert why is not None and "ridden out" in why
