"""The sample service's own lease watch through Redis outages, and its on-disk epoch floor (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuity.detect.outage import CUT_OFF, REDIS_DOWN, Verdict
from continuity.sample.ledger_service import App, EpochFloor, LeaseClock, LeaseView, lease_verdict
from tests.failover_support import make_blueprint

LIMIT, TOL = 2.25, 60.0


def verdict(view: LeaseView, now: float, last_ok: float = 100.0, down_at: float | None = None,
            grace_until: float = 0.0) -> str | None:
    return lease_verdict(view, now, last_ok, down_at, LIMIT, TOL, grace_until)


def test_ours_keeps_serving_taken_stops_at_once() -> None:
    assert verdict(LeaseView("ours"), 500.0) is None
    assert verdict(LeaseView("taken", "lease now held by core-b at epoch 2"), 100.1) == \
        "lease now held by core-b at epoch 2"


def test_redis_down_is_ridden_out_cut_off_is_not() -> None:
    down = LeaseView("error", "lease unconfirmed", Verdict(REDIS_DOWN, "refused"))
    cut = LeaseView("error", "lease unconfirmed", Verdict(CUT_OFF, "timeout"))
    assert verdict(down, 105.0, down_at=105.0) is None, "a 5 s Redis restart"
    assert verdict(cut, 102.0) is None, "within most of a lease period"
    assert verdict(cut, 102.3) is not None


def test_a_missing_lease_right_after_an_outage_waits_for_the_agent_to_take_it_back() -> None:
    absent = LeaseView("absent", "lease expired or released")
    assert verdict(absent, 100.5) == "lease expired or released", "outside an outage: the agent let it go"
    assert verdict(absent, 100.5, grace_until=101.0) is None, "just started: the promoter takes it next"
    assert verdict(absent, 106.0, down_at=105.8) is None, "Redis just came back without the expired lease"
    assert verdict(absent, 108.5, down_at=105.8) == "lease expired or released", "the agent never took it back"


def test_a_cut_off_instance_counts_from_the_renewal_it_saw_not_from_its_last_look() -> None:
    # lease_ttl 3 s: the agent renewed at 99.1, the instance looked at 100.0 (2.1 s left), then was cut off
    clock = LeaseClock(3.0, TOL, started=90.0)
    assert clock.step(LeaseView("ours", left=2.1), sent=100.0, now=100.01) is None
    cut = LeaseView("error", "lease unconfirmed", Verdict(CUT_OFF, "timeout"))
    assert clock.step(cut, sent=101.0, now=101.3) is None
    # the lease runs out at Redis at 102.1; the instance gives up 2.25 s after the renewal, not after its look
    why = clock.step(cut, sent=101.4, now=101.5)
    assert why is not None and "lease not renewed for 2.40s" in why, why
    assert "timeout" in why


def test_a_redis_restart_is_still_ridden_out_by_the_clock() -> None:
    clock = LeaseClock(3.0, TOL, started=90.0)
    assert clock.step(LeaseView("ours", left=3.0), sent=100.0, now=100.0) is None
    down = LeaseView("error", "lease unconfirmed", Verdict(REDIS_DOWN, "refused"))
    assert all(clock.step(down, sent=t, now=t + 0.01) is None for t in (101.0, 102.5, 104.0, 105.0))
    cut = LeaseView("error", "lease unconfirmed", Verdict(CUT_OFF, "timeout"))
    assert clock.step(cut, sent=105.2, now=105.3) is not None, "cut off after the outage: stop"


def test_epoch_floor_is_kept_on_disk_and_only_rises(tmp_path: Path) -> None:
    floor = EpochFloor(tmp_path)
    assert floor.read() == 0
    assert floor.raise_to(3) == 3
    assert floor.raise_to(2) == 3
    assert EpochFloor(tmp_path).read() == 3


def test_an_instance_below_the_floor_refuses_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the epoch floor, not replication: the ledger replicates async here (no standby to wait for)
    monkeypatch.setenv("CONTINUITY_BLUEPRINT", str(make_blueprint(tmp_path)))
    EpochFloor(tmp_path).raise_to(5)
    low = App("ledger", "core-a", 0, 4, tmp_path, redis_url=None)
    status, body = low.write(1, {})
    assert status == 409 and "lower than epoch 5" in body["error"]
    high = App("ledger", "core-a", 0, 5, tmp_path, redis_url=None)
    assert high.write(1, {})[0] == 200
