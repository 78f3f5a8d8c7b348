"""Scorecard and postmortem drafts are pure functions of drill records, backup status and the blueprint."""

from __future__ import annotations

from continuity.blueprint import load_blueprint
from continuity.report import (
    backup_coverage,
    failover_as_record,
    render_postmortem,
    scorecard,
    scorecard_markdown,
)
from tests.helpers import ROOT

BP = load_blueprint(ROOT / "ops" / "blueprint.yml")
NOW = 10_000.0
SETS = {"core-a-ledger": {"paths": ["examples/data/ledger.jsonl", "examples/data/ledger.db",
                                    "examples/data/files"], "rpo": 900.0}}


def drill(i: int, services: list[str], mttr: float | None, rpo: float | None, status: str = "passed") -> dict:
    return {"id": f"d{i}", "scenario": "s", "status": status, "started": 1000.0 + i, "services": services,
            "metrics": {"mttr": mttr, "achieved_rpo": rpo}}


def test_latest_and_worst_of_last_n_beside_declared() -> None:
    drills = [drill(1, ["ledger"], 12.0, 0.0), drill(2, ["ledger"], 4.0, 0.0), drill(3, ["ledger"], 5.0, 1.0)]
    card = scorecard(BP, drills, {}, {}, NOW, last_n=2)
    row = card["services"]["ledger"]
    assert row["rto"] == {"declared": 10.0, "latest": 5.0, "worst": 5.0}  # drill 1 fell out of the window
    assert row["rpo"] == {"declared": 5.0, "latest": 1.0, "worst": 1.0}
    assert row["verdict"] == "pass" and row["drills"] == 2
    card3 = scorecard(BP, drills, {}, {}, NOW, last_n=3)
    assert card3["services"]["ledger"]["rto"]["worst"] == 12.0
    assert card3["services"]["ledger"]["verdict"] == "fail"
    assert card3["domains"]["payments"]["verdict"] == "fail"


def test_untested_services_and_failed_latest_drill() -> None:
    card = scorecard(BP, [drill(1, ["notifier"], 3.0, 0.0, status="failed")], {}, {}, NOW)
    assert card["services"]["notifier"]["verdict"] == "fail"
    assert card["services"]["keystore"]["verdict"] == "untested"
    assert card["verdict"] == "fail"
    assert card["tiers"]["0"]["verdict"] == "untested"


def test_backup_freshness_against_set_rpo_and_last_verified_restore() -> None:
    assert backup_coverage(BP, SETS) == {"ledger": ["core-a-ledger"], "keystore": ["core-a-ledger"]}
    status = {"core-a-ledger": {"last_snapshot_time": str(NOW - 1000), "last_verify_time": str(NOW - 50),
                                "last_verify_ok": "1", "last_verified_snapshot_time": str(NOW - 1200)}}
    card = scorecard(BP, [drill(1, ["ledger"], 4.0, 0.0)], status, SETS, NOW)
    b = card["services"]["ledger"]["backup"]
    assert b["fresh"] is False and b["sets"][0]["last_snapshot_age"] == 1000 and b["sets"][0]["target_rpo"] == 900
    assert b["sets"][0]["last_verify_ok"] is True
    assert card["services"]["ledger"]["verdict"] == "fail"  # measured fine, but backups are stale
    status["core-a-ledger"]["last_snapshot_time"] = str(NOW - 10)
    assert scorecard(BP, [drill(1, ["ledger"], 4.0, 0.0)], status, SETS, NOW)["services"]["ledger"]["verdict"] \
        == "pass"


def test_garbage_backup_status_is_read_defensively() -> None:
    status = {"core-a-ledger": {"last_snapshot_time": "yesterday", "last_verify_ok": "?"}}
    card = scorecard(BP, [], status, SETS, NOW)
    assert card["services"]["ledger"]["backup"]["sets"][0]["last_snapshot_age"] is None


def test_markdown_has_a_row_per_service_with_declared_and_measured() -> None:
    card = scorecard(BP, [drill(1, ["ledger", "notifier"], 4.2, 0.0)], {}, {}, NOW)
    md = scorecard_markdown(card)
    ledger_row = next(line for line in md.splitlines() if line.startswith("| ledger |"))
    assert "| 10.0s | 4.2s / 4.2s | 5.0s | 0ms / 0ms |" in ledger_row
    assert "## Tier 0" in md and "## Tier 1" in md and "| notifier |" in md


def test_postmortem_from_drill_record() -> None:
    record = {"id": "d9", "scenario": "primary-node-outage", "title": "Primary dies", "status": "failed",
              "started": 1000.0, "fault_at": 1001.0, "environment": "test", "action": "kill -9 core-a",
              "target": {"kind": "node", "nodes": ["core-a"]}, "services": ["ledger"],
              "metrics": {"mttr": 14.0, "detection_time": 2.5, "data_lost": 0, "achieved_rpo": 0.0,
                          "failover_steps": [{"step": "promote", "duration": 9.0, "service": "ledger",
                                              "node": "core-b", "ok": True}]},
              "objectives": {"rto": 10.0, "rpo": 5.0},
              "expectations": [{"name": "MTTR within RTO", "expected": 10.0, "measured": 14.0, "ok": False}]}
    events = [{"ts": 1001.0, "kind": "continuity_layer.drill.fault_injected", "data": {"fault": "node-kill"}},
              {"ts": 1003.5, "kind": "continuity_layer.detect.node_dead", "node": "core-a", "data": {}},
              {"ts": 1003.6, "kind": "continuity_layer.node.ping", "node": "core-b", "data": {}}]
    md = render_postmortem(record, events)
    assert "# Postmortem (draft): Primary dies" in md
    assert "| +2.500s | `detect.node_dead` | core-a |" in md
    assert "node.ping" not in md  # noise is left out of the timeline
    assert "MTTR within RTO: expected ≤ 10.0s, measured 14.0s" in md
    assert "slowest failover step: promote (9.0s)" in md
    assert "{{" not in md


def test_postmortem_from_real_failover_record() -> None:
    rec = {"id": "f1", "service": "ledger", "outcome": "succeeded", "started": 50.0, "last_seen": 48.0,
           "old_primary": "core-a", "new_primary": "core-b", "reason": "node dead", "mttr": 4.0,
           "detection": 2.5, "steps": [{"step": "fence", "duration": 0.01, "node": None, "ok": True}]}
    md = render_postmortem(failover_as_record(rec, "development"), [])
    assert "failover of ledger" in md and "core-a → core-b" in md and "| fence |" in md
    assert "| Environment | development |" in md and "production" not in md


def test_latest_is_the_newest_drill_that_measured_the_number() -> None:
    drills = [drill(1, ["keystore"], 3.0, 0.5), drill(2, ["keystore"], 40.0, None)]
    row = scorecard(BP, drills, {}, {}, NOW)["services"]["keystore"]
    assert row["rto"]["latest"] == 40.0 and row["rpo"]["latest"] == 0.5 and row["rpo"]["worst"] == 0.5


def test_service_sources_link_a_set_to_its_service() -> None:
    """`kind: service` sources have no path: the set protects the service it names (ledger-live -> ledger)."""
    sets = {**SETS, "ledger-live": {"paths": [], "services": ["ledger"], "rpo": 120.0}}
    assert backup_coverage(BP, sets)["ledger"] == ["core-a-ledger", "ledger-live"]
    status = {"ledger-live": {"last_snapshot_time": str(NOW - 30), "last_verify_time": str(NOW - 20),
                              "last_verify_ok": "1"}}
    md = scorecard_markdown(scorecard(BP, [], status, sets, NOW))
    row = next(line for line in md.splitlines() if line.startswith("| ledger |"))
    assert "1970-01-01 02:46:20Z" in row  # ledger-live's verified restore, NOW - 20
    assert "never" in row  # core-a-ledger: no restore drill yet — not a failure mark
    assert "✗" not in row


def test_read_backup_sets_keeps_service_sources(tmp_path) -> None:
    from continuity.report import read_backup_sets

    cfg = tmp_path / "continuity.yml"
    cfg.write_text("version: 1\nsets:\n  live:\n    node: core-a\n    sources:\n      - {kind: service, service: "
                   "ledger}\n    repository: r\n    rpo: 2m\n")
    assert read_backup_sets(cfg) == {"live": {"paths": [], "services": ["ledger"], "rpo": 120.0}}


def test_measured_rpo_of_a_service_comes_from_its_failovers_reported_loss() -> None:
    """A node-loss drill: the client lost nothing (achieved_rpo 0), the failover of ledger reported starting
    3 s behind; keystore (in the same drill, no failover) keeps the client's number. The markdown postmortem
    shows where the failover's data came from."""
    loss = [{"service": "ledger", "source": "standby", "loss_records": 4.0, "loss_seconds": 3.0, "record": "r1"}]
    rec = {"id": "d1", "scenario": "primary-node-loss", "status": "passed", "started": 1000.0,
           "services": ["ledger", "keystore"], "metrics": {"mttr": 4.0, "achieved_rpo": 0.0, "failover_loss": loss}}
    card = scorecard(BP, [rec], {}, {}, NOW)
    assert card["services"]["ledger"]["rpo"] == {"declared": 5.0, "latest": 3.0, "worst": 3.0}
    assert card["services"]["keystore"]["rpo"]["latest"] == 0.0
    over = dict(rec, metrics=dict(rec["metrics"], failover_loss=[dict(loss[0], loss_seconds=7.0)]))
    assert scorecard(BP, [over], {}, {}, NOW)["services"]["ledger"]["verdict"] == "fail"  # 7 s > declared 5 s
    md = render_postmortem(rec, [])
    assert "| standby | ledger | 4 | 3.0s |" in md
