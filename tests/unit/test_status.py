"""`continuity status` folds one Redis read into a report; checked here without Redis."""

from __future__ import annotations

import json

from continuity.blueprint import load_blueprint
from continuity.status import RedisSnapshot, build_report
from tests.helpers import ROOT


def test_report_marks_seen_nodes_and_routes() -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    now = 1_800_000_000.0
    snap = RedisSnapshot(
        registry={"core-a": "{}", "core-b": "{}"},
        seen={"core-a": str(now - 2), "core-b": str(now - 120)},
        detector={}, queue_depth={"core-a": 0, "core-b": 4, "sat-1": 7},
        mode=json.dumps({"mode": "degraded", "shed_tiers": [3]}),
        routes={"ledger": json.dumps({"node": "core-b", "epoch": 3})},
        epochs={"ledger": "3"}, leases={},
    )
    report = build_report(bp, snap, now=now)
    nodes = {n["id"]: n for n in report["nodes"]}
    assert nodes["core-a"]["seen"] and nodes["core-a"]["state"] == "seen"
    assert not nodes["core-b"]["seen"] and nodes["core-b"]["state"] == "stale"
    assert nodes["sat-1"]["state"] == "never-seen" and nodes["sat-1"]["queue_depth"] == 7
    services = {s["id"]: s for s in report["services"]}
    assert services["ledger"]["primary"] == "core-b" and services["ledger"]["epoch"] == 3
    assert services["keystore"]["primary"] == "core-b" and services["keystore"]["epoch"] == 0
    assert report["mode"]["mode"] == "degraded"
    assert [s["id"] for s in report["services"]].index("keystore") < [s["id"] for s in
                                                                       report["services"]].index("ledger")


def _snap_with_detector(now: float, last_sweep: float | None) -> RedisSnapshot:
    meta = None if last_sweep is None else json.dumps({"last_sweep": last_sweep})
    return RedisSnapshot(
        registry={}, seen={"core-a": str(now - 0.05)},
        detector={"core-a": json.dumps({"state": "alive"}), "core-b": json.dumps({"state": "dead"})},
        queue_depth={}, mode=json.dumps({"mode": "normal"}), routes={}, epochs={}, leases={},
        detector_meta=meta)


def test_states_from_a_detector_that_stopped_sweeping_are_not_shown_as_current() -> None:
    """A detector that stopped leaves its last classifications in Redis: "dead" beside "seen 50 ms ago" for as long
    as nobody sweeps. Past its freshness window status says the states are stale instead of reporting them."""
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    now = 1_800_000_000.0
    fresh = build_report(bp, _snap_with_detector(now, now - 1.0), now=now)
    assert {n["id"]: n["state"] for n in fresh["nodes"]}["core-b"] == "dead"
    assert fresh["detector"]["stale"] is False and "stale" not in fresh["mode"]
    old = build_report(bp, _snap_with_detector(now, now - 120.0), now=now)
    states = {n["id"]: n["state"] for n in old["nodes"]}
    assert states["core-a"].startswith("unknown") and states["core-b"].startswith("unknown")
    assert old["detector"] == {"last_sweep": now - 120.0, "age": 120.0, "stale_after": old["detector"]["stale_after"],
                               "stale": True} and old["mode"]["stale"] is True
    never = build_report(bp, _snap_with_detector(now, None), now=now)
    assert never["detector"]["stale"] is True
