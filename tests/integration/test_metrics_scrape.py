"""The exporter against a real redis-server: a real HTTP scrape parsed by prometheus_client, the alert rules and the
Grafana dashboard checked against the names that scrape really contains."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from continuity import report
from continuity.blueprint import load_blueprint
from continuity.metrics import catalogue
from continuity.metrics.exporter import Exporter, PortHolder
from continuity.metrics.pulsecheck import PulseCheck
from continuity.redisd import connect, free_port
from continuity.status import build_report, read_snapshot
from tests.helpers import ROOT, project_env, run_cli, wait_for
from tests.metrics_support import (
    NOTIFY_YML,
    Scene,
    exporter_for,
    get,
    parse,
    promql_metrics,
    replicating,
    scrape,
    value,
    write_scene,
)

RULES = ROOT / "ops" / "alerts" / "continuity.rules.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "continuity.json"


@pytest.fixture
def scene(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("CONTINUITY_STATE", str(state))
    monkeypatch.setenv("CONTINUITY_REDIS_URL", redis_url)
    client = connect(redis_url)
    yield write_scene(client, state)
    client.close()


@pytest.fixture
def scraped(scene: Scene) -> dict:
    return scrape(exporter_for(scene))


def emitted_names(scraped: dict) -> set[str]:
    return set(scraped)


def test_a_scrape_has_every_catalogue_metric_and_nothing_else(scraped: dict) -> None:
    """With state for everything, every declared metric appears (counters as ``_total`` samples), and no sample
    the catalogue does not declare."""
    assert emitted_names(scraped) == {m.name for m in catalogue.METRICS.values()}


def test_scraped_values_are_the_fleet_state(scene: Scene, scraped: dict) -> None:
    v = lambda name, **labels: value(scraped, name, **labels)  # noqa: E731
    assert v("continuity_up") == 1
    assert v("continuity_mode", mode="degraded") == 1 and v("continuity_mode", mode="normal") == 0
    assert v("continuity_node_state", node="core-a", state="dead") == 1
    assert v("continuity_node_state", node="core-a", state="alive") == 0
    assert v("continuity_node_state", node="sat-1", state="expected-offline") == 1
    assert v("continuity_service_primary", service="ledger", node="core-b") == 1
    assert v("continuity_service_primary", service="ledger", node="core-a") == 0
    assert v("continuity_service_epoch", service="ledger") == 2
    assert v("continuity_incidents_open") == 1 and v("continuity_config_errors") == 1
    # the failover record: counted once, with the MTTR and detection the record itself computes
    assert v("continuity_service_failovers_total", service="ledger", kind="failover", outcome="succeeded") == 1
    assert v("continuity_service_failovers_total", service="ledger", kind="switchover", outcome="succeeded") == 0
    assert v("continuity_service_last_failover_mttr_seconds", service="ledger") == pytest.approx(8.0, abs=1e-3)
    assert v("continuity_service_last_failover_detection_seconds", service="ledger") == pytest.approx(2.0, abs=1e-3)
    assert v("continuity_service_local_restarts_total", service="ledger") == 2
    assert v("continuity_service_local_restarts_total", service="keystore") == 0
    assert v("continuity_pulse_events_total", kind="failover.service_restarted") == 2
    # pauses: the one past its end no longer pauses the service but is reported expired
    assert v("continuity_failover_pause_expired", scope="keystore") == 1
    assert v("continuity_service_failover_paused", service="keystore") == 0
    assert v("continuity_service_failover_paused", service="notifier") == 1
    assert v("continuity_failover_pause_expired", scope="notifier") == 0
    assert v("continuity_failover_pause_expiry_timestamp_seconds", scope="notifier") is None
    # backups: RPO of ledger-live (2m) met, core-a-ledger's (15m) not; last restore drill passed / failed
    assert v("continuity_backup_rpo_met", set="ledger-live") == 1 and v("continuity_backup_rpo_met",
                                                                          set="core-a-ledger") == 0
    assert v("continuity_backup_rpo_objective_seconds", set="ledger-live") == 120
    assert v("continuity_backup_last_restore_drill_ok", set="core-a-ledger") == 0
    assert v("continuity_backup_repository_size_bytes", set="ledger-live") == 99_000
    assert v("continuity_backup_last_failure_timestamp_seconds", set="ledger-live", operation="copy") == \
        pytest.approx(scene.now - 500, abs=1e-3)
    assert v("continuity_backup_verify_interval_seconds", set="ledger-live") == 60
    # drills: per scenario, the newest finished one; the running drill holds the lock
    assert v("continuity_drills_total", scenario="primary-node-outage", status="failed") == 1
    assert v("continuity_drill_last_passed", scenario="primary-node-outage") == 0
    assert v("continuity_drill_last_passed", scenario="service-crash") == 1
    assert v("continuity_drill_last_mttr_seconds", scenario="service-crash") == 2.5
    assert v("continuity_drill_running") == 1
    assert v("continuity_notifications_delivered_total", webhook="ops") == 1
    assert v("continuity_notifications_given_up_total", webhook="ops") == 1
    assert v("continuity_notifications_pending", webhook="ops") == 1
    assert v("continuity_pulse_verify_ok") == 1
    assert v("continuity_pulse_chain_events") > 0
    # replication: the ledger's standby core-a as core-b (its primary) published it; the worst of its two sources
    assert v("continuity_replication_lag_seconds", service="ledger", node="core-a") == 7.5
    assert v("continuity_replication_lag_records", service="ledger", node="core-a") == 12
    assert v("continuity_replication_lag_bytes", service="ledger", node="core-a") == 600
    assert v("continuity_replication_standby_state", service="ledger", node="core-a", state="disconnected") == 1
    assert v("continuity_replication_mode", service="ledger", mode="degraded") == 1
    assert v("continuity_replication_sync_standbys", service="ledger") == 1
    assert v("continuity_replication_applied_records", service="ledger", node="core-a") == 30
    # core-b is the primary: core-a's old row about it is no lag, and no standby position is shown for it
    assert v("continuity_replication_lag_seconds", service="ledger", node="core-b") is None
    assert v("continuity_replication_applied_records", service="ledger", node="core-b") is None
    assert v("continuity_replication_lag_seconds", service="keystore", node="core-a") == 0
    assert v("continuity_replication_mode", service="notifier", mode="async") == 1  # its own ledger
    assert v("continuity_replication_mode", service="reports", mode="off") == 1  # no declared data


def test_scrape_agrees_with_status_and_report(scene: Scene, scraped: dict) -> None:
    """The same readers feed both: times equal exactly, ages within the seconds between the two reads."""
    status = build_report(scene.bp, read_snapshot(scene.client, scene.bp))
    for n in status["nodes"]:
        if n["last_seen"] is not None:
            assert value(scraped, "continuity_node_last_seen_timestamp_seconds", node=n["id"]) == n["last_seen"]
    card = report.build(scene.client, scene.bp, scene.now)
    for sid, row in card["services"].items():
        assert value(scraped, "continuity_service_rto_objective_seconds", service=sid) == row["rto"]["declared"]
        assert value(scraped, "continuity_service_rto_measured_seconds", service=sid, window="worst") == \
            row["rto"]["worst"]
        assert value(scraped, "continuity_service_verdict", service=sid, verdict=row["verdict"]) == 1
    assert card["backups"]
    for b in card["backups"]:
        fresh = value(scraped, "continuity_backup_rpo_met", set=b["set"])
        assert fresh == (None if b["fresh"] is None else float(b["fresh"])), b
        assert value(scraped, "continuity_backup_rpo_objective_seconds", set=b["set"]) == b["target_rpo"]
        age = value(scraped, "continuity_backup_last_snapshot_age_seconds", set=b["set"])
        assert age == (None if b["last_snapshot_age"] is None else pytest.approx(b["last_snapshot_age"], abs=5)), b
        ok = value(scraped, "continuity_backup_last_restore_drill_ok", set=b["set"])
        assert ok == (None if b["last_verify_ok"] is None else float(b["last_verify_ok"])), b


def test_unreadable_redis_is_up_zero_not_an_error(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    exporter = Exporter(lambda: connect(dead, socket_timeout=1, socket_connect_timeout=1),
                        lambda: load_blueprint(ROOT / "ops" / "blueprint.yml"),
                        pulse_check=PulseCheck(tmp_path / "pulse_history.jsonl"), background=False)
    got = scrape(exporter)
    assert value(got, "continuity_up") == 0
    assert value(got, "continuity_pulse_chain_events") == 0  # this host's file still reported
    assert not any(name.startswith(("continuity_node", "continuity_service", "continuity_backup")) for name in got)
    # the command says so too: the scrape on stdout, one line on stderr, exit 1
    res = run_cli("metrics", env=project_env(dead, tmp_path))
    assert res.returncode == 1, res.stderr
    assert parse(res.stdout)["continuity_up"] == {(): 0.0}
    assert "cannot read the fleet's state" in res.stderr


def test_metrics_command_prints_the_same_scrape(scene: Scene, redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "notify.yml").write_text(NOTIFY_YML)
    env = project_env(redis_url, scene.state, CONTINUITY_NOTIFICATIONS=str(tmp_path / "notify.yml"),
                      CONTINUITY_BLUEPRINT=str(scene.blueprint_path))
    with replicating(scene):  # the lags stay current between the two runs, as a running replicator keeps them
        text = run_cli("metrics", env=env)
        res = run_cli("metrics", "--json", env=env)
    assert text.returncode == 0, text.stderr
    as_text = parse(text.stdout)
    assert res.returncode == 0, res.stderr
    as_json = json.loads(res.stdout)
    assert set(as_json) == set(as_text)
    epoch = as_json["continuity_service_epoch"]["samples"]
    assert {"labels": {"service": "ledger"}, "value": 2.0} in epoch
    assert value(as_text, "continuity_notifications_delivered_total", webhook="ops") == 1


def test_replication_in_redis_shows_in_the_metrics_command_as_status_shows_it(scene: Scene, redis_url: str) -> None:
    """Lag rows, standby positions and the sync mode written by the replicator's own writers (kept current by a
    publisher at the replicator's cadence) come out of `continuity metrics` as `continuity status --json` shows
    them: per standby the worst source's seconds, the records summed, the mode the primary declared."""
    env = project_env(redis_url, scene.state, CONTINUITY_BLUEPRINT=str(scene.blueprint_path))
    with replicating(scene):
        res = run_cli("metrics", env=env)
        st = run_cli("status", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert st.returncode == 0, st.stderr
    got, status = parse(res.stdout), json.loads(st.stdout)
    rows = [r for r in status["replication"] if r["lag_seconds"] is not None]
    assert {(r["service"], r["standby"]) for r in rows} == {("ledger", "core-a"), ("keystore", "core-a")}
    for service, node in {(r["service"], r["standby"]) for r in rows}:
        mine = [r for r in rows if (r["service"], r["standby"]) == (service, node)]
        labels = {"service": service, "node": node}
        assert value(got, "continuity_replication_lag_seconds", **labels) == max(r["lag_seconds"] for r in mine)
        assert value(got, "continuity_replication_lag_bytes", **labels) == sum(r["lag_bytes"] for r in mine)
        records = [r["lag_records"] for r in mine if r["lag_records"] is not None]
        assert value(got, "continuity_replication_lag_records", **labels) == (sum(records) if records else None)
    assert value(got, "continuity_replication_lag_seconds", service="ledger", node="core-a") == 7.5
    assert value(got, "continuity_replication_lag_records", service="ledger", node="core-a") == 12
    assert value(got, "continuity_replication_standby_state", service="ledger", node="core-a",
                 state="disconnected") == 1
    assert value(got, "continuity_replication_standby_state", service="keystore", node="core-a",
                 state="streaming") == 1
    modes = {s["id"]: s["replication"] for s in status["services"]}
    assert modes["ledger"] == "degraded"
    assert value(got, "continuity_replication_mode", service="ledger", mode="degraded") == 1
    assert value(got, "continuity_replication_applied_records", service="ledger", node="core-a") == 30


def test_a_replicator_that_stopped_publishing_shows_as_unknown_not_as_its_last_lag(scene: Scene) -> None:
    """A minute after the rows were written (an injected clock: the exporter's, as a scrape a minute later would
    read them) nothing speaks for the standby: no lag series, state unknown — what an alert needs to see."""
    later = Exporter(lambda: scene.client, lambda: scene.bp, pulse_check=PulseCheck(scene.state / "p.jsonl"),
                     background=False, clock=lambda: scene.now + 60)
    got = scrape(later)
    assert value(got, "continuity_replication_lag_seconds", service="ledger", node="core-a") is None
    assert value(got, "continuity_replication_standby_state", service="ledger", node="core-a", state="unknown") == 1
    assert value(got, "continuity_replication_standby_state", service="ledger", node="core-a",
                 state="disconnected") == 0
    # what the standby itself last said it holds is still there: the primary may be gone
    assert value(got, "continuity_replication_applied_records", service="ledger", node="core-a") == 30


def test_one_process_per_host_serves_the_port_and_another_takes_over(scene: Scene) -> None:
    port = free_port()
    first = PortHolder(exporter_for(scene), port, "127.0.0.1", retry=0.05).start()
    wait_for(lambda: first.server is not None, what="the first holder to serve")
    second = PortHolder(exporter_for(scene), port, "127.0.0.1", retry=0.05).start()
    try:
        assert second.server is None  # the port is taken: it stays quiet and keeps trying
        assert "continuity_up 1.0" in get(f"http://127.0.0.1:{port}/metrics")
        first.stop()
        wait_for(lambda: second.server is not None, what="the second holder to take the port over")
        assert "continuity_up 1.0" in get(f"http://127.0.0.1:{port}/metrics")
    finally:
        first.stop()
        second.stop()


# --- alert rules ------------------------------------------------------------------------------------------------
def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_are_well_formed_and_read_only_emitted_metrics(scraped: dict) -> None:
    doc = yaml.safe_load(RULES.read_text())
    assert {g["name"] for g in doc["groups"]} and all(g["rules"] for g in doc["groups"])
    names = emitted_names(scraped)
    alerts = set()
    for rule in _rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        read = promql_metrics(rule["expr"])
        assert read, f"{rule['alert']}: reads no metric"
        assert read <= names, f"{rule['alert']}: {sorted(read - names)} are not in a real scrape"
        alerts.add(rule["alert"])
    # what the issue asks alerts for
    assert {"ContinuityBackupRPOBreached", "ContinuityRestoreNotVerified", "ContinuityNodeDead",
            "ContinuityFailoverEscalated", "ContinuityModeDegraded", "ContinuityModeCritical",
            "ContinuityDrillFailed", "ContinuityFailoverPauseExpired", "ContinuityReplicationLagOverRPO",
            "ContinuityReplicationSyncDegraded", "ContinuityReplicationSyncStandbysMissing"} <= alerts


def test_the_metric_name_check_catches_a_misspelt_metric(scraped: dict) -> None:
    """The check above can fail: a rule reading a metric the exporter does not emit is caught."""
    bad = "max by (set) (continuity_backup_rpo_mett) == 0 and on(set) continuity_up"
    assert promql_metrics(bad) - emitted_names(scraped) == {"continuity_backup_rpo_mett"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH (Debian: apt install prometheus)")
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    """Syntax, and behaviour: ops/alerts/continuity.rules.test.yml feeds series (two exporters each) and says which
    alerts fire when (an RPO breach only after its `for`, an expired pause, a dead node, no verified restore)."""
    res = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(["promtool", "test", "rules", "continuity.rules.test.yml"], cwd=RULES.parent,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# --- Grafana dashboard ------------------------------------------------------------------------------------------
def _panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_dashboard_has_the_four_rows_and_every_query_names_an_emitted_metric(scraped: dict) -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert [p["title"] for p in dash["panels"] if p["type"] == "row"] == ["Fleet", "Services", "Backups", "Drills"]
    names = emitted_names(scraped)
    used: set[str] = set()
    for panel in _panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            read = promql_metrics(target["expr"])
            assert read, f"{panel['title']}: {target['expr']} reads no metric"
            assert read <= names, f"{panel['title']}: {sorted(read - names)} are not in a real scrape"
            used |= read
    # the dashboard shows the numbers the issue lists, not a token subset
    assert {"continuity_backup_last_snapshot_age_seconds", "continuity_backup_last_verified_restore_timestamp_seconds",
            "continuity_service_last_failover_mttr_seconds", "continuity_node_state", "continuity_mode",
            "continuity_drills_total", "continuity_pulse_verify_ok", "continuity_replication_lag_seconds",
            "continuity_replication_mode", "continuity_replication_standby_state"} <= used


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH (Debian: apt install prometheus)")
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule promtool must accept."""
    import re

    rules = [{"record": f"dashboard:q{i}", "expr": re.sub(r"\$__\w+", "5m", t["expr"])}
             for i, t in enumerate(t for p in _panels() for t in p["targets"])]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
