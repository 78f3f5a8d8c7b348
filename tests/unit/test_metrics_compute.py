"""The metrics as a pure function of one reading: naming conventions, state sets, what is absent and why."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from continuity.blueprint import Blueprint, load_blueprint, parse_blueprint
from continuity.config import parse_text
from continuity.events import KINDS
from continuity.metrics import catalogue
from continuity.metrics.compute import (
    BackupSchedule,
    FailoverTally,
    NotifyTally,
    Reading,
    Samples,
    compute,
    unreachable,
)
from continuity.state.replication import Applied, StandbyLag, SyncMode
from continuity.status import ReplicationSnapshot

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_750_000_000.0
DOC = ROOT / "docs" / "continuity" / "metrics.md"


@pytest.fixture(scope="module")
def bp() -> Blueprint:
    return load_blueprint(ROOT / "ops" / "blueprint.yml")


def status(**over: Any) -> dict[str, Any]:
    doc = {
        "mode": {"mode": "normal"}, "detector": {"last_sweep": NOW - 1, "stale": False}, "config_errors": [],
        "nodes": [{"id": "core-a", "state": "alive", "last_seen": NOW - 2, "queue_depth": 3, "in_contact": True},
                  {"id": "core-b", "state": "unknown (detector stale, last said alive)", "last_seen": None,
                   "queue_depth": 0, "in_contact": True}],
        "services": [{"id": "ledger", "domain": "payments", "tier": 0, "primary": "core-b", "epoch": 4}],
        "pauses": {},
    }
    doc.update(over)
    return doc


def reading(**over: Any) -> Reading:
    base: dict[str, Any] = dict(
        now=NOW, status=status(),
        backup_sets={"live": {"paths": [], "rpo": 120.0}, "loose": {"paths": [], "rpo": None}},
        backup_status={"live": {"last_snapshot_time": str(NOW - 30), "last_verify_time": str(NOW - 10),
                                "last_verify_ok": "1"}, "loose": {"last_snapshot_time": str(NOW - 5)}},
        schedules={"live": BackupSchedule(60.0, 600.0)}, drills=[], failovers=FailoverTally(), incidents=0,
        pulse_counts={}, drill_running=False)
    base.update(over)
    return Reading(**base)


def by_name(samples: list) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for s in samples:
        out.setdefault(s.metric.name, {})[s.labels] = s.value
    return out


def one(samples: list, name: str, **labels: str) -> float | None:
    return by_name(samples).get(name, {}).get(tuple(labels.items()))


# --- the catalogue ---------------------------------------------------------------------------------------------
BOUNDED_LABELS = {"mode", "node", "state", "service", "domain", "tier", "window", "verdict", "kind", "outcome",
                  "scope", "set", "operation", "scenario", "status", "webhook"}


def test_names_follow_prometheus_conventions() -> None:
    for m in catalogue.METRICS.values():
        assert re.fullmatch(r"continuity_[a-z0-9_]+", m.name), m.name
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert not re.search(r"_(ms|millis|milliseconds|minutes|hours|kb|mb|gb)(_|$)", m.name), f"{m.name}: base units"
        if {"time", "timestamp", "age", "duration", "mttr", "detection"} & set(m.name.split("_")):
            assert m.name.endswith("_seconds"), m.name
        assert set(m.labels) <= BOUNDED_LABELS, f"{m.name}: {set(m.labels) - BOUNDED_LABELS} may be unbounded"
        assert m.help.strip() and m.source.strip(), m.name


def test_the_documentation_lists_every_metric() -> None:
    text = DOC.read_text()
    begin, end = "<!-- BEGIN metrics:generated -->\n", "<!-- END metrics:generated -->"
    assert text[text.index(begin) + len(begin):text.index(end)] == catalogue.render_markdown(), \
        "regenerate with `python -m continuity.metrics.catalogue`"


def test_a_sample_with_undeclared_labels_is_refused() -> None:
    s = Samples()
    with pytest.raises(ValueError, match="labels"):
        s.add(catalogue.NODE_HEARTBEAT_AGE, 1.0, node="a", epoch="3")
    with pytest.raises(ValueError, match="labels"):
        s.add(catalogue.NODE_HEARTBEAT_AGE, 1.0)
    s.add(catalogue.NODE_HEARTBEAT_AGE, None, node="a")  # no value: no sample
    assert s.out == []


# --- compute ---------------------------------------------------------------------------------------------------
def test_states_are_one_hot(bp: Blueprint) -> None:
    got = compute(bp, reading())
    assert {labels: v for labels, v in by_name(got)["continuity_mode"].items()} == {
        (("mode", "normal"),): 1, (("mode", "degraded"),): 0, (("mode", "critical"),): 0, (("mode", "unknown"),): 0}
    states = by_name(got)["continuity_node_state"]
    assert sum(v for labels, v in states.items() if labels[0] == ("node", "core-a")) == 1
    assert states[(("node", "core-a"), ("state", "alive"))] == 1
    # a stale detector's verdict is not reported as the node's state
    assert states[(("node", "core-b"), ("state", "unknown"))] == 1
    assert one(got, "continuity_node_heartbeat_age_seconds", node="core-a") == 2
    assert one(got, "continuity_node_heartbeat_age_seconds", node="core-b") is None  # never seen: absent, not 0


def test_primary_is_marked_among_the_declared_nodes(bp: Blueprint) -> None:
    got = by_name(compute(bp, reading()))["continuity_service_primary"]
    ledger = {dict(labels)["node"]: v for labels, v in got.items() if dict(labels)["service"] == "ledger"}
    assert ledger == {"core-a": 0, "core-b": 1, "core-c": 0}


def test_failover_counters_start_at_zero_and_never_count_running_records(bp: Blueprint) -> None:
    got = compute(bp, reading(failovers=FailoverTally(counts={("ledger", "failover", "escalated"): 2}, running=1,
                                                      last_mttr={"ledger": 7.5})))
    fo = by_name(got)["continuity_service_failovers_total"]
    ledger = {(dict(k)["kind"], dict(k)["outcome"]): v for k, v in fo.items() if dict(k)["service"] == "ledger"}
    assert len(ledger) == 12 and ledger[("failover", "escalated")] == 2 and sum(ledger.values()) == 2
    assert one(got, "continuity_failovers_running") == 1
    assert one(got, "continuity_service_last_failover_mttr_seconds", service="ledger") == 7.5
    assert one(got, "continuity_service_last_failover_mttr_seconds", service="keystore") is None


def test_local_restarts_and_event_counts_come_from_the_pulse_counters(bp: Blueprint) -> None:
    counts = {("continuity_layer.failover.service_restarted", "ledger"): 3,
              ("continuity_layer.failover.service_restarted", "keystore"): 1,
              ("continuity_layer.node.ping", None): 10, ("continuity_layer.someone.elses", None): 5}
    got = compute(bp, reading(pulse_counts=counts))
    assert one(got, "continuity_service_local_restarts_total", service="ledger") == 3
    events = {dict(k)["kind"]: v for k, v in by_name(got)["continuity_pulse_events_total"].items()}
    assert set(events) == set(KINDS)  # catalogue kinds only, every one from 0
    assert events["failover.service_restarted"] == 4 and events["node.ping"] == 10 and events["drill.started"] == 0


def test_pauses_in_force_and_expired(bp: Blueprint) -> None:
    st = status(pauses={"*": {"at": NOW - 10, "until": NOW - 1, "expired": True},
                        "ledger": {"at": NOW - 10, "until": None, "expired": False}})
    got = compute(bp, reading(status=st))
    assert one(got, "continuity_service_failover_paused", service="ledger") == 1
    assert one(got, "continuity_failover_pause_expired", scope="all") == 1
    assert one(got, "continuity_failover_pause_expiry_timestamp_seconds", scope="all") == NOW - 1
    assert one(got, "continuity_failover_pause_expiry_timestamp_seconds", scope="ledger") is None
    # the fleet-wide pause ran past its end: it pauses nothing any more
    st = status(pauses={"*": {"at": NOW - 10, "until": NOW - 1, "expired": True}})
    assert one(compute(bp, reading(status=st)), "continuity_service_failover_paused", service="ledger") == 0
    st = status(pauses={"*": {"at": NOW - 10, "until": None, "expired": False}})
    assert one(compute(bp, reading(status=st)), "continuity_service_failover_paused", service="ledger") == 1


def test_backup_freshness_and_sets_without_an_objective(bp: Blueprint) -> None:
    got = compute(bp, reading())
    assert one(got, "continuity_backup_last_snapshot_age_seconds", set="live") == 30
    assert one(got, "continuity_backup_rpo_met", set="live") == 1
    assert one(got, "continuity_backup_rpo_objective_seconds", set="live") == 120
    # a set that protects no service and declares no RPO has an age but no objective to meet
    assert one(got, "continuity_backup_last_snapshot_age_seconds", set="loose") == 5
    assert one(got, "continuity_backup_rpo_met", set="loose") is None
    assert not any(math.isinf(s.value) for s in got)
    # the last drill passed and predates last_verified_time: its time is the last verified restore
    assert one(got, "continuity_backup_last_verified_restore_timestamp_seconds", set="live") == NOW - 10
    assert one(got, "continuity_backup_verify_interval_seconds", set="live") == 600
    stale = reading(backup_status={"live": {"last_snapshot_time": str(NOW - 121)}})
    assert one(compute(bp, stale), "continuity_backup_rpo_met", set="live") == 0


def test_drills_per_scenario_use_the_newest_finished_run(bp: Blueprint) -> None:
    drills = [{"id": "a", "scenario": "s1", "status": "passed", "started": NOW - 300, "metrics": {"mttr": 3.0}},
              {"id": "b", "scenario": "s1", "status": "failed", "started": NOW - 100, "metrics": {"mttr": 30.0}},
              {"id": "c", "scenario": "s1", "status": "running", "started": NOW - 10},
              {"id": "d", "scenario": "s2", "status": "passed", "started": NOW - 50, "metrics": {}}]
    got = compute(bp, reading(drills=drills, drill_running=True))
    assert one(got, "continuity_drill_last_passed", scenario="s1") == 0
    assert one(got, "continuity_drill_last_mttr_seconds", scenario="s1") == 30
    assert one(got, "continuity_drill_last_run_age_seconds", scenario="s1") == 100
    assert one(got, "continuity_drill_last_mttr_seconds", scenario="s2") is None
    assert one(got, "continuity_drills_total", scenario="s1", status="failed") == 1
    assert one(got, "continuity_drills_total", scenario="s1", status="passed") == 1
    assert one(got, "continuity_drill_running") == 1


def test_notifications_and_the_unreachable_scrape(bp: Blueprint) -> None:
    got = compute(bp, reading(notify={"ops": NotifyTally(pending=2, delivered=5, given_up=1)}))
    assert one(got, "continuity_notifications_pending", webhook="ops") == 2
    assert one(got, "continuity_notifications_delivered_total", webhook="ops") == 5
    down = unreachable(0.5)
    assert {s.metric.name: s.value for s in down} == {"continuity_up": 0, "continuity_read_duration_seconds": 0.5}


# --- replication ------------------------------------------------------------------------------------------------
def _lag(source: str, standby: str, *, state: str = "streaming", seconds: float = 0.0, records: int | None = 0,
         nbytes: int = 0, primary: str = "core-b", updated: float = NOW - 1) -> StandbyLag:
    return StandbyLag("ledger", source, standby, primary, 4, state, "async", 100, None, 100 + nbytes, None, seconds,
                      records, nbytes, updated)


def _applied(node: str, source: str, count: int | None) -> Applied:
    return Applied("ledger", source, node, 10, count, count, None, 4, "core-b", NOW - 1)


def _replicated(bp: Blueprint, lags: list[StandbyLag], applied: list[Applied] = (),  # type: ignore[assignment]
                modes: dict[str, SyncMode] | None = None) -> list:
    repl = ReplicationSnapshot({"ledger": lags} if lags else {}, {"ledger": list(applied)} if applied else {},
                               modes or {})
    return compute(bp, reading(replication=repl))


def test_replication_lag_is_the_worst_source_of_each_standby(bp: Blueprint) -> None:
    """ledger's primary is core-b here (status), so core-a is its standby: a ledger and a SQLite copy, one behind."""
    got = _replicated(bp, [_lag("ledger.jsonl", "core-a", state="catchup", seconds=7.5, records=12, nbytes=1500),
                           _lag("ledger.db", "core-a", seconds=0.5, records=None, nbytes=4096)],
                      [_applied("core-a", "ledger.jsonl", 40), _applied("core-a", "ledger.db", None),
                       _applied("core-b", "ledger.jsonl", 90)])
    assert one(got, "continuity_replication_lag_seconds", service="ledger", node="core-a") == 7.5
    assert one(got, "continuity_replication_lag_records", service="ledger", node="core-a") == 12
    assert one(got, "continuity_replication_lag_bytes", service="ledger", node="core-a") == 5596
    states = {dict(k)["state"]: v for k, v in by_name(got)["continuity_replication_standby_state"].items()
              if dict(k)["service"] == "ledger" and dict(k)["node"] == "core-a"}
    assert states == {"streaming": 0, "catchup": 1, "disconnected": 0, "unknown": 0}
    # core-c, the other standby, published nothing: unknown
    assert one(got, "continuity_replication_standby_state", service="ledger", node="core-c", state="unknown") == 1
    assert one(got, "continuity_replication_mode", service="ledger", mode="sync") == 1
    # what core-a holds; core-b is the primary now: its old standby position is not a standby's
    assert one(got, "continuity_replication_applied_records", service="ledger", node="core-a") == 40
    assert one(got, "continuity_replication_applied_records", service="ledger", node="core-b") is None
    # sources without records (SQLite only) give seconds and bytes but no record count
    got = _replicated(bp, [_lag("ledger.db", "core-a", seconds=0.5, records=None, nbytes=4096)])
    assert one(got, "continuity_replication_lag_records", service="ledger", node="core-a") is None
    assert one(got, "continuity_replication_lag_seconds", service="ledger", node="core-a") == 0.5


def test_replication_rows_that_do_not_speak_for_now_are_unknown(bp: Blueprint) -> None:
    """A row from the former primary, a row its replicator stopped refreshing, or about a node outside the
    placement: no lag series, and the standby's state is unknown (so an alert sees it)."""
    for row in (_lag("ledger.jsonl", "core-a", primary="core-a", seconds=1.0),
                _lag("ledger.jsonl", "core-a", seconds=1.0, updated=NOW - 60),
                _lag("ledger.jsonl", "core-x", seconds=1.0)):
        got = _replicated(bp, [row], [_applied("core-x", "ledger.jsonl", 5)])
        assert "continuity_replication_lag_seconds" not in by_name(got), row
        assert one(got, "continuity_replication_standby_state", service="ledger", node="core-a",
                   state="unknown") == 1, row
        assert not any(dict(k).get("node") == "core-x" for name, series in by_name(got).items() for k in series)
    # a state the catalogue does not know (written by something else) counts as unknown, not as a new label value
    got = _replicated(bp, [_lag("ledger.jsonl", "core-a", state="bogus")])
    assert one(got, "continuity_replication_standby_state", service="ledger", node="core-a", state="unknown") == 1


def test_replication_mode_of_each_service(bp: Blueprint) -> None:
    services = [{"id": sid, "domain": v.domain, "tier": v.tier, "primary": v.primary, "epoch": 1}
                for sid, v in bp.services.items()]
    got = compute(bp, reading(status=status(services=services)))
    modes = {dict(k)["service"]: dict(k)["mode"] for k, v in by_name(got)["continuity_replication_mode"].items()
             if v == 1}
    # the ledger is in sync mode; keystore (a directory) and notifier (its own ledger) replicate asynchronously;
    # reports has no data, telemetry no standby: nothing replicated
    assert modes == {"ledger": "sync", "keystore": "async", "notifier": "async", "reports": "off", "telemetry": "off"}
    assert one(got, "continuity_replication_sync_standbys", service="ledger") == 1
    assert one(got, "continuity_replication_sync_standbys", service="notifier") is None  # not sync
    assert one(got, "continuity_replication_standby_state", service="keystore", node="core-a", state="unknown") == 1
    assert not any(dict(k)["service"] == "reports" for k in by_name(got)["continuity_replication_standby_state"])


def test_a_sync_service_is_degraded_only_by_its_current_primary(bp: Blueprint) -> None:
    doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    doc["domains"]["payments"]["services"]["ledger"]["replication"] = {"mode": "sync", "on_no_standby": "degrade"}
    sync = parse_blueprint(parse_text(yaml.safe_dump(doc), "blueprint.yml"))
    degraded = {"ledger": SyncMode("ledger", "degraded", "core-b", 4, NOW - 30, "0 of 1 standby(s) connected")}
    got = _replicated(sync, [_lag("ledger.jsonl", "core-a", state="disconnected", seconds=3.0, records=4)],
                      modes=degraded)
    assert one(got, "continuity_replication_mode", service="ledger", mode="degraded") == 1
    assert one(got, "continuity_replication_mode", service="ledger", mode="sync") == 0
    assert one(got, "continuity_replication_sync_standbys", service="ledger") == 1
    assert one(got, "continuity_replication_standby_state", service="ledger", node="core-a",
               state="disconnected") == 1
    # the former primary's word that it was degraded says nothing about the new primary
    stale = {"ledger": SyncMode("ledger", "degraded", "core-a", 3, NOW - 90, "old")}
    got = _replicated(sync, [], modes=stale)
    assert one(got, "continuity_replication_mode", service="ledger", mode="sync") == 1
