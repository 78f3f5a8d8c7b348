"""A fleet's history for scorecard tests: drills, failovers and backup status written the way the layer writes them.

Failovers go through :mod:`continuity.failover.records` (the chain's own writer: record hash, history, pulse
events), drills through :mod:`continuity.state.drills` with the record shape the runner saves, backup status
through :mod:`continuity.state.backups` with the fields the backup tasks set. Times are relative to ``now``.
"""

from __future__ import annotations

from typing import Any

from continuity.failover import records
from continuity.state import backups
from continuity.state import drills as drill_state

CHAIN = ("demote", "fence", "prepare", "promote", "repoint", "verify", "record")


def drill_record(i: int, now: float, scenario: str, status: str, services: list[str], mttr: float | None,
                 detection: float | None, rpo: float | None, lost: int | None, failovers: int) -> dict[str, Any]:
    started = now - 3600 + i * 300
    return {"id": f"2026{i:04d}-{scenario}-{i:06x}", "scenario": scenario, "title": scenario, "status": status,
            "started": started, "finished": started + 40.5, "fault_at": started + 2.25, "environment": "test",
            "services": services, "target": {"kind": "node", "nodes": ["core-a"], "services": services},
            "metrics": {"mttr": mttr, "detection_time": detection, "achieved_rpo": rpo, "data_lost": lost,
                        "failover_count": failovers, "writes_sent": 120, "writes_acked": 118},
            "expectations": [{"name": "MTTR within RTO", "expected": 10.0, "measured": mttr,
                              "ok": mttr is not None and mttr <= 10.0}]}


DRILLS = [  # i, scenario, status, services, MTTR, detection, achieved RPO, lost, failovers
    (1, "primary-node-outage", "passed", ["ledger", "reports"], 6.123456, 2.61, 0.0, 0, 1),
    (2, "service-crash", "passed", ["ledger"], 3.5, 1.25, 0.0, 0, 0),
    (3, "primary-node-outage", "failed", ["ledger", "reports"], 14.25, 3.875, 1.5, 3, 1),
    (4, "standby-core-outage", "passed", ["keystore", "notifier"], 7.75, 2.5, 0.0, 0, 1),
    (5, "backup-corruption", "passed", ["ledger"], None, None, 42.0, None, 0),
    (6, "primary-node-outage", "passed", ["ledger", "reports"], 5.0625, 2.125, 0.0, 0, 1),
]


def failover(client: Any, now: float, service: str, old: str, new: str, outcome: str, reason: str = "") -> str:
    """A chain as the workers run it: one record, the steps on the nodes that run them, then the outcome."""
    t = now - 1800.0
    plan = {"service": service, "kind": "failover", "old_primary": old, "candidate": new, "fallbacks": [],
            "reason": "node dead", "expected_epoch": 2}
    rid = records.open_record(client, plan, {"detected_at": t, "last_seen": t - 2.4}, "detector", t)
    for n, step in enumerate(CHAIN):
        node = old if step == "demote" else (None if step in ("fence", "record") else new)
        start = t + 3.0 + n * 0.35
        records.step_started(client, rid, 1, step, node, start)
        ok = not (outcome != "succeeded" and step == "promote")
        records.step_finished(client, rid, 1, step, ok, start + 0.1 + 0.05 * n,
                              None if ok else {"error": "promote hook exited 1"}, service=service)
        if not ok:
            break
    records.finish(client, rid, outcome, t + 6.0, {"reason": reason} if reason else None, service=service)
    return rid


def seed(client: Any, now: float) -> dict[str, Any]:
    """Write the whole history; returns the ids written."""
    drills = [drill_record(i, now, *rest) for i, *rest in DRILLS]
    for d in drills:
        drill_state.save_record(client, d)
    fo = [failover(client, now, "ledger", "core-a", "core-b", "succeeded"),
          failover(client, now + 600, "keystore", "core-b", "core-a", "escalated",
                   reason="every candidate failed: promote hook exited 1")]
    backups.record(client, "ledger-live", {"last_snapshot_time": now - 45.5, "last_verify_time": now - 30.25,
                                           "last_verify_ok": 1, "last_verified_snapshot_time": now - 75.0})
    backups.record(client, "core-a-ledger", {"last_snapshot_time": now - 1500.0, "last_verify_time": now - 3000.0,
                                             "last_verify_ok": 0})
    backups.record(client, "sat-1-telemetry", {"last_snapshot_time": now - 600.0})
    return {"drills": [d["id"] for d in drills], "failovers": fo}


def lookup(card: Any, path: str) -> Any:
    """The value at a ``data-json`` path: keys and list indices separated by dots."""
    here = card
    for part in path.split("."):
        here = here[int(part)] if isinstance(here, list) else here[part]
    return here


def mismatches(elements: list[dict[str, Any]], card: Any) -> list[str]:
    """Every page element whose value or text differs from what the report's JSON holds at its path."""
    import json

    from continuity.report_html import shown

    bad = []
    for el in elements:
        try:
            want = lookup(card, el["json"])
        except (KeyError, IndexError, ValueError, TypeError):
            bad.append(f"{el['json']}: no such path in the JSON")
            continue
        if json.loads(el["value"]) != want:
            bad.append(f"{el['json']}: page says {el['value']}, JSON has {want!r}")
        if el["text"].strip() != shown(want, el["kind"]):
            bad.append(f"{el['json']}: page shows {el['text']!r}, expected {shown(want, el['kind'])!r}")
    return bad
