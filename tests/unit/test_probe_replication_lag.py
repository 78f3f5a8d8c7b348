"""The ``replication-lag`` steady-state probe: a data-loss drill strikes only while every standby follows."""

from __future__ import annotations

import time
from pathlib import Path

import fakeredis
import pytest

from continuity.blueprint import load_blueprint
from continuity.drills.probes import LAG_FRESH, ProbeContext, run_probe
from continuity.drills.scenarios import ProbeSpec
from continuity.state.replication import StandbyLag, publish_lags

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ctx() -> ProbeContext:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    return ProbeContext(fakeredis.FakeRedis(decode_responses=True), bp)


def lag(standby: str, seconds: float, state: str = "streaming", source: str = "ledger.jsonl",
        age: float = 0.0) -> StandbyLag:
    return StandbyLag("ledger", source, standby, "core-a", 3, state, "async", 100, 10, 100, 10, seconds, 0, 0,
                      time.time() - age)


def check(ctx: ProbeContext, tolerance: float | None = None) -> tuple[bool, str]:
    res = run_probe(ProbeSpec(name="repl", probe="replication-lag", service="ledger", tolerance=tolerance), ctx)
    return res.ok, res.detail


def standbys(ctx: ProbeContext) -> list[str]:
    svc = ctx.bp.services["ledger"]
    return [n for n in (svc.primary, *svc.standbys) if n != "core-a"]


def test_every_standby_streaming_within_the_limit_passes(ctx: ProbeContext) -> None:
    publish_lags(ctx.client, [lag(n, 0.2) for n in standbys(ctx)] + [lag(n, 0.1, source="ledger.db")
                                                                     for n in standbys(ctx)])
    ok, detail = check(ctx)
    assert ok, detail


@pytest.mark.parametrize("bad", [
    {"seconds": 77.8, "state": "disconnected"},  # the stalled standby a node-loss drill would have lost
    {"seconds": 3.0},  # streaming, but further behind than the policy's lag_alert (1 s)
    {"seconds": 0.0, "age": LAG_FRESH + 5},  # its primary stopped publishing: nothing is known about now
])
def test_a_standby_behind_disconnected_or_unheard_of_fails(ctx: ProbeContext, bad: dict) -> None:
    first, *rest = standbys(ctx)
    publish_lags(ctx.client, [lag(first, **bad)] + [lag(n, 0.1) for n in rest])
    ok, detail = check(ctx)
    assert not ok and first in detail


def test_no_lag_published_for_a_standby_fails_and_tolerance_raises_the_limit(ctx: ProbeContext) -> None:
    ok, detail = check(ctx)
    assert not ok and "no lag published" in detail
    publish_lags(ctx.client, [lag(n, 3.0) for n in standbys(ctx)])
    assert not check(ctx)[0]
    assert check(ctx, tolerance=5.0)[0]
