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
