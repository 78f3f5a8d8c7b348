"""Acceptance: a real `continuity up` fleet after one backup, one restore drill, one chaos drill and one failover.

Its /metrics endpoint, scraped over HTTP and parsed by prometheus_client's parser, shows what ``report --json``,
``status --json`` and the failover and drill records say; and the failover and the failed drill each reach a
local webhook receiver exactly once, although the receiver was down while they happened (retried, not lost, not
duplicated once it is back).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery

from continuity.pulse import stream_events
from continuity.redisd import connect
from tests.failover_support import kill_services, make_blueprint
from tests.helpers import ROOT, continuity_cmd, operator_env, run_cli, wait_for
from tests.metrics_support import Receiver, get, parse, value

pytestmark = pytest.mark.slow

BACKUP = """\
version: 1
sets:
  ledger-data:
    node: core-a
    sources:  # the ledger's declared data paths: what links the set to the service in the scorecard
      - {{kind: ledger, path: examples/data/ledger.jsonl}}
      - {{kind: sqlite, path: examples/data/ledger.db}}
    repository: "{state}/repos/live"
    schedule: 24h
    rpo: 10m
    key: {{password_env: CONTINUITY_PASSWORD}}
    verify: {{node: core-b, schedule: 24h}}
"""


class UpFleet:
    def __init__(self, tmp: Path, receiver: Receiver) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        bp = make_blueprint(tmp, ("ledger",), failover_cooldown="1s")
        doc = yaml.safe_load(bp.read_text())
        doc["nodes"]["sat-1"]["contact"] = [{"start": "00:00", "end": "24:00"}]
        bp.write_text(yaml.safe_dump(doc, sort_keys=False))
        (tmp / "backup.yml").write_text(BACKUP.format(state=self.state))
        scenarios = yaml.safe_load((ROOT / "ops" / "drills" / "continuity_scenarios.yaml").read_text())
        # the shipped service-crash drill (the agent restarts the ledger in place within its duration) ...
        crash = dict(scenarios["scenarios"]["service-crash"])
        # ... held to an RTO no restart meets: the drill fails
        crash["expectations"] = dict(crash["expectations"], rto="1ms")
        scenarios["scenarios"] = {"crash-too-slow": crash}
        scenarios.pop("calendar", None)
        (tmp / "scenarios.yaml").write_text(yaml.safe_dump(scenarios, sort_keys=False))
        (tmp / "notifications.yml").write_text(
            f"version: 1\nretry: {{initial: 1s, max: 2s}}\nwebhooks:\n  ops:\n    url: {receiver.url()}\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
        self.env.update({"CONTINUITY_STATE": str(self.state), "CONTINUITY_ROOT": str(ROOT), "PYTHONUNBUFFERED": "1",
                         "CONTINUITY_BLUEPRINT": str(bp), "CONTINUITY_BACKUP_CONFIG": str(tmp / "backup.yml"),
                         "CONTINUITY_SCENARIOS": str(tmp / "scenarios.yaml"),
                         "CONTINUITY_NOTIFICATIONS": str(tmp / "notifications.yml"), "CONTINUITY_ENV": "test",
                         "CONTINUITY_PASSWORD": "metrics-e2e", "CONTINUITY_GAME_DAYS": "off"})
        self.env.update(operator_env(self.state))
        self.log = tmp / "up.log"
        self._client: Any = None
        self.up: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as fh:
            self.up = subprocess.Popen(continuity_cmd("up", "--no-live", "--flower-port", "0", "--metrics-port", "0"),
                                       env=self.env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.metrics_url = wait_for(lambda: re.search(r"metrics: (http://\S+/metrics)", self.log.read_text()),
                                    timeout=60, what="`continuity up` to print its metrics URL").group(1)
        self.redis_url = (self.state / "redis.url").read_text().strip()
        self.env["CONTINUITY_REDIS_URL"] = self.redis_url
        self.wait_normal()

    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.redis_url)
        return self._client

    def cli(self, *args: str, timeout: float = 150) -> Any:
        res = run_cli(*args, env=self.env, timeout=timeout)
        assert res.returncode == 0, f"{args}: {res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        return json.loads(res.stdout) if "--json" in args else res.stdout

    def wait_normal(self) -> None:
        def calm() -> bool:
            st = json.loads(run_cli("status", "--json", env=self.env, timeout=30).stdout)
            return st["mode"].get("mode") == "normal" and all(n["state"] == "alive" for n in st["nodes"])

        wait_for(calm, timeout=120, interval=0.5, what="mode normal and every node alive")

    def stop(self) -> None:
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.up.pid, signal.SIGKILL)
        kill_services(self.state)
        if self._client is not None:
            self._client.close()


def restarted(client: Any) -> int:
    """The agents' local restarts of the ledger in the fleet's shared stream (what the counter counts)."""
    return sum(1 for _sid, e in stream_events(client, count=100_000)
               if e["kind"].endswith("failover.service_restarted") and e.get("service") == "ledger")


def moving(read: tuple[dict, int]) -> tuple:
    """What of a status report (and the restart count) may change while the fleet runs."""
    status, restarts = read
    return (status["mode"].get("mode"), tuple((n["id"], n["state"]) for n in status["nodes"]),
            tuple((s["id"], s["primary"], s["epoch"]) for s in status["services"]), restarts)


@pytest.fixture
def fleet(tmp_path: Path, receiver: Receiver) -> Iterator[UpFleet]:
    f = UpFleet(tmp_path, receiver)
    try:
        f.start()
        yield f
    finally:
        f.stop()


def test_scrape_of_a_running_fleet_equals_the_reports_and_notifies_once(fleet: UpFleet, receiver: Receiver) -> None:
    # --- one backup and one restore drill, on the nodes beat would send them to -------------------------------
    app = Celery("probe", broker=fleet.redis_url, backend=fleet.redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    snap = app.send_task("continuity.backup.snapshot", args=["ledger-data"], queue="node.core-a").get(timeout=120)
    verify = app.send_task("continuity.backup.verify", args=["ledger-data"], queue="node.core-b").get(timeout=120)
    assert verify["ok"], verify
    # --- one chaos drill (it fails: its RTO is 1 ms) and one failover (a switchover) ---------------------------
    res = run_cli("drill", "run", "crash-too-slow", "--json", env=fleet.env, timeout=150)
    drill = json.loads(res.stdout)
    assert drill["status"] == "failed", res.stdout[-2000:] + res.stderr[-2000:]
    fleet.wait_normal()
    fleet.cli("failover", "switchover", "ledger", "--to", "core-b")
    fleet.wait_normal()

    # --- notifications: the receiver was down all along; they are retried, then delivered once ----------------
    def retried() -> bool:
        st = fleet.cli("notify", "status", "--json", timeout=30)
        owed = [d for d in st["recent"] if d["notice"]["topic"] in ("failover.completed", "drill.failed")]
        return len(owed) == 2 and all(d["status"] == "pending" and d["attempts"] >= 2 for d in owed)

    wait_for(retried, timeout=60, interval=0.5, what="both notifications retried while the receiver is down")
    receiver.start()

    def delivered() -> bool:
        st = fleet.cli("notify", "status", "--json", timeout=30)
        return not any(d["status"] == "pending" for d in st["recent"])

    wait_for(delivered, timeout=60, interval=0.5, what="every notification delivered once the receiver is back")
    by_topic: dict[str, list[dict]] = {}
    for p in receiver.posts:
        by_topic.setdefault(p["body"]["topic"], []).append(p["body"])
    assert len(by_topic["failover.completed"]) == 1 and len(by_topic["drill.failed"]) == 1, by_topic
    assert by_topic["drill.failed"][0]["labels"] == {"scenario": "crash-too-slow"}
    ids = [p["headers"]["Idempotency-Key"] for p in receiver.posts]
    assert len(ids) == len(set(ids))

    # --- the scrape, against report --json, status --json and the records -------------------------------------
    # the fleet lives on (heartbeats, an agent's spooled event arriving late): compare a scrape with the reports
    # read just before and after it, once nothing the comparison looks at moved in between
    def settled() -> tuple[dict, dict, dict] | None:
        before = fleet.cli("status", "--json"), restarted(fleet.client())
        scraped = parse(get(fleet.metrics_url))
        after = fleet.cli("status", "--json"), restarted(fleet.client())
        if "continuity_pulse_verify_ok" not in scraped or moving(before) != moving(after):
            return None
        return scraped, before[0], {"restarts": before[1]}

    scraped, status, seen = wait_for(settled, timeout=60, interval=0.2,
                                     what="a scrape between two identical status reads, the pulse file verified")
    card = fleet.cli("report", "--json")
    history = fleet.cli("failover", "history", "--json")
    v = lambda name, **labels: value(scraped, name, **labels)  # noqa: E731

    assert v("continuity_up") == 1 and v("continuity_pulse_verify_ok") == 1
    # backups: the report's numbers (its per-set view, and the set as the service's scorecard row shows it)
    (b,) = card["backups"]
    (row,) = card["services"]["ledger"]["backup"]["sets"]
    assert b["set"] == row["set"] == "ledger-data"
    assert v("continuity_backup_rpo_objective_seconds", set="ledger-data") == b["target_rpo"] == 600
    assert v("continuity_backup_rpo_met", set="ledger-data") == float(b["fresh"]) == 1
    assert v("continuity_backup_last_restore_drill_ok", set="ledger-data") == float(b["last_verify_ok"]) == 1
    assert v("continuity_backup_last_restore_drill_timestamp_seconds", set="ledger-data") == \
        row["last_verified_restore"]
    assert v("continuity_backup_last_snapshot_age_seconds", set="ledger-data") == \
        pytest.approx(b["last_snapshot_age"], abs=30)
    assert v("continuity_backup_last_restore_drill_age_seconds", set="ledger-data") == \
        pytest.approx(b["last_verify_age"], abs=30)
    assert v("continuity_backup_verified_snapshot_age_seconds", set="ledger-data") == \
        pytest.approx(row["verified_snapshot_age"], abs=30)
    assert v("continuity_backup_last_snapshot_duration_seconds", set="ledger-data") == snap["duration"]
    assert v("continuity_backup_last_restore_drill_duration_seconds", set="ledger-data") == verify["duration"]
    assert v("continuity_backup_repository_size_bytes", set="ledger-data") == snap["repository_bytes"] > 0
    # services: declared vs measured, verdict
    svc = card["services"]["ledger"]
    assert v("continuity_service_rto_objective_seconds", service="ledger") == svc["rto"]["declared"]
    assert v("continuity_service_rpo_objective_seconds", service="ledger") == svc["rpo"]["declared"]
    assert svc["rto"]["latest"] is not None
    for window in ("latest", "worst"):
        assert v("continuity_service_rto_measured_seconds", service="ledger", window=window) == svc["rto"][window]
    assert v("continuity_service_verdict", service="ledger", verdict=svc["verdict"]) == 1
    for verdict in ("pass", "fail", "untested"):
        assert v("continuity_scorecard_verdict", verdict=verdict) == float(card["verdict"] == verdict)
    # roles and nodes: the status report's
    (ledger,) = [s for s in status["services"] if s["id"] == "ledger"]
    assert ledger["primary"] == "core-b"
    assert v("continuity_service_primary", service="ledger", node="core-b") == 1
    assert v("continuity_service_primary", service="ledger", node="core-a") == 0
    assert v("continuity_service_epoch", service="ledger") == ledger["epoch"]
    assert v("continuity_mode", mode=status["mode"]["mode"]) == 1
    for n in status["nodes"]:
        assert v("continuity_node_state", node=n["id"], state=n["state"]) == 1
        assert v("continuity_node_heartbeat_age_seconds", node=n["id"]) == pytest.approx(n["seen_ago"], abs=30)
    # replication (the workers' replicators): the mode status shows; core-a, the ledger's standby since the
    # failover, in exactly one state, with a lag exactly when core-b published a current row about it
    shown = ledger["replication"]
    assert v("continuity_replication_mode", service="ledger", mode="sync" if shown.startswith("sync") else shown) == 1
    states = {st: v("continuity_replication_standby_state", service="ledger", node="core-a", state=st)
              for st in ("streaming", "catchup", "disconnected", "unknown")}
    assert sorted(states.values()) == [0, 0, 0, 1], states
    lag = v("continuity_replication_lag_seconds", service="ledger", node="core-a")
    assert (lag is None) == (states["unknown"] == 1), (lag, states)
    assert v("continuity_replication_standby_state", service="ledger", node="core-b", state="unknown") is None
    # the failover: the record's own numbers
    (rec,) = [r for r in history if r["service"] == "ledger"]
    assert rec["outcome"] == "succeeded" and rec["mttr"] is not None
    assert v("continuity_service_failovers_total", service="ledger", kind=rec["kind"], outcome="succeeded") == 1
    assert v("continuity_service_last_failover_mttr_seconds", service="ledger") == rec["mttr"]
    assert v("continuity_service_last_failover_timestamp_seconds", service="ledger") == rec["started"]
    # the drill: its record's numbers, and the agent's restart of the crashed service
    assert v("continuity_drills_total", scenario="crash-too-slow", status="failed") == 1
    assert v("continuity_drill_last_passed", scenario="crash-too-slow") == 0
    assert v("continuity_drill_last_mttr_seconds", scenario="crash-too-slow") == drill["metrics"]["mttr"]
    assert v("continuity_drill_last_run_timestamp_seconds", scenario="crash-too-slow") == drill["started"]
    assert seen["restarts"] >= 1
    assert v("continuity_service_local_restarts_total", service="ledger") == seen["restarts"]
    assert v("continuity_pulse_events_total", kind="drill.finished") == 1
    assert v("continuity_notifications_delivered_total", webhook="ops") == len(receiver.posts)
