"""A fleet's state written into a real Redis through the layer's own functions, so a scrape has something to say
about every metric; and the helpers that scrape a real endpoint and parse it like Prometheus does."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from continuity.blueprint import Blueprint, load_blueprint
from continuity.failover import control
from continuity.failover import records as failover_records
from continuity.metrics.exporter import Exporter, serve
from continuity.metrics.pulsecheck import PulseCheck
from continuity.pulse import Pulse
from continuity.redisd import free_port
from continuity.state import (
    backups,
    config_errors,
    drills,
    epochs,
    incidents,
    keys,
    leases,
    nodes,
    notifications,
    replication,
)
from continuity.state import mode as state_mode
from continuity.state.replication import Applied, StandbyLag, SyncMode
from tests.helpers import ROOT

NOTIFY_YML = """\
version: 1
webhooks:
  ops:
    url: http://127.0.0.1:9/never
"""


@dataclass
class Scene:
    client: Any
    bp: Blueprint
    now: float
    state: Path
    failover_record: str
    blueprint_path: Path = ROOT / "ops" / "blueprint.yml"
    lags: list[StandbyLag] = field(default_factory=list)


def sync_ledger_blueprint(state: Path) -> Path:
    """The shipped blueprint with the ledger in sync mode, degrading when its standby is away (as a tier-0 ledger
    that must keep taking payments would be declared)."""
    doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    doc["domains"]["payments"]["services"]["ledger"]["replication"] = {"mode": "sync", "on_no_standby": "degrade"}
    path = state / "blueprint.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def scene_lags(now: float) -> list[StandbyLag]:
    """What core-b's replicator publishes as the ledger's (and keystore's) primary: core-a's ledger copy is 12
    records and 7.5 s behind with the connection down (so the sync ledger degraded), its SQLite copy current; and
    the row core-a wrote about core-b when core-a was primary, which no longer speaks for anything."""
    return [
        StandbyLag("ledger", "ledger.jsonl", "core-a", "core-b", 2, "disconnected", "degraded", 900, 30, 1500, 42,
                   7.5, 12, 600, now),
        StandbyLag("ledger", "ledger.db", "core-a", "core-b", 2, "streaming", "degraded", 4096, None, 4096, None,
                   0.0, None, 0, now),
        StandbyLag("ledger", "ledger.jsonl", "core-b", "core-a", 1, "catchup", "sync", 100, 3, 900, 30, 40.0, 27,
                   800, now - 200),
        StandbyLag("keystore", "files", "core-a", "core-b", 0, "streaming", "async", 2048, None, 2048, None, 0.0,
                   None, 0, now),
    ]


@contextmanager
def replicating(scene: Scene, every: float = 0.2) -> Iterator[None]:
    """The primary's replicator as it runs: the scene's current lags published again every ``every`` seconds (a
    replicator publishes twice a second), so they stay current however long a child process takes to start."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            at = time.time()
            replication.publish_lags(scene.client, [replace(lag, updated=at) for lag in scene.lags
                                                    if lag.updated >= scene.now])

    thread = threading.Thread(target=run, name="scene-replicator", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def write_scene(client: Any, state: Path) -> Scene:
    """Nodes (one dead), mode, roles, a pause past its end, an incident, a broken config, backups, two drills (one
    failed, one running), a completed failover, local restarts, notification deliveries of every outcome, and
    replication (a sync ledger degraded, its standby behind) written by the replicator's own writers."""
    bp_path = sync_ledger_blueprint(state)
    bp = load_blueprint(bp_path)
    now = time.time()
    for node in bp.nodes:
        nodes.register(client, node, {"node": node})
        nodes.mark_seen(client, node, now - (30 if node == "core-a" else 1))
    client.hset(keys.node_state(), mapping={"core-a": json.dumps({"state": "dead"}),
                                            "core-b": json.dumps({"state": "alive"}),
                                            "sat-1": json.dumps({"state": "expected-offline"})})
    client.set(keys.detector_meta(), json.dumps({"last_sweep": now}))
    state_mode.write(client, {"mode": "degraded", "unhealthy": ["ledger"]})
    epochs.bump_epoch(client, "ledger", 0)
    epochs.bump_epoch(client, "ledger", 1)
    leases.acquire(client, "ledger", "core-b", 2, 600)
    control.pause(client, "keystore", "ops@host", "disk swap", now=now - 3600, until=now - 60)
    control.pause(client, "notifier", "ops@host", "no end", now=now - 100)
    incidents.open_(client, "failover-reports", {"id": "failover-reports", "reason": "no candidate"})
    config_errors.report(client, "core-b", "/etc/ops/blueprint.yml", "line 3: bad", now - 5)
    backups.record(client, "ledger-live", {
        "last_snapshot": "abc", "last_snapshot_time": now - 30, "last_snapshot_bytes": 1234,
        "last_snapshot_duration": 0.5, "repository_bytes": 99_000, "last_verify_time": now - 20, "last_verify_ok": 1,
        "last_verify_duration": 1.25, "last_verified_time": now - 20, "last_verified": "abc",
        "last_verified_snapshot_time": now - 30, "last_copy_error_time": now - 500, "last_copy_error": "locked"})
    backups.record(client, "core-a-ledger", {"last_snapshot": "def", "last_snapshot_time": now - 7200,
                                             "last_verify_time": now - 7000, "last_verify_ok": 0})
    drills.save_record(client, {"id": "d1", "scenario": "service-crash", "status": "passed", "started": now - 900,
                                "services": ["ledger"], "metrics": {"mttr": 2.5, "detection_time": 0.7,
                                                                   "achieved_rpo": 0.0}})
    drills.save_record(client, {"id": "d2", "scenario": "primary-node-outage", "status": "failed",
                                "started": now - 600, "services": ["ledger"],
                                "metrics": {"mttr": 40.0, "detection_time": 3.0, "achieved_rpo": 1.5}})
    drills.take_lock(client, "d3|host|1", 60, lambda held: False)
    rid = failover_records.open_record(
        client, {"service": "ledger", "kind": "failover", "old_primary": "core-a", "candidate": "core-b",
                 "expected_epoch": 1},
        {"detected_at": now - 118, "last_seen": {"core-a": now - 120}}, "detector", now - 117)
    for step, t in (("fence", now - 116), ("promote", now - 115), ("verify", now - 112)):
        failover_records.step_started(client, rid, 0, step, "core-b", t - 0.5)
        failover_records.step_finished(client, rid, 0, step, True, t, {"epoch": 2} if step == "promote" else None,
                                       service="ledger")
    failover_records.finish(client, rid, "succeeded", now - 111, service="ledger", epoch=2)
    pulse = Pulse(client=client, path=state / "pulse_history.jsonl")
    for _ in range(2):
        pulse.emit("failover.service_restarted", service="ledger", data={})
    for status, event in (("delivered", "e1"), ("given_up", "e2"), ("pending", "e3")):
        did = notifications.delivery_id("ops", event)
        notifications.enqueue(client, did, {"webhook": "ops", "created": now, "status": "pending"}, now + 3600)
        if status != "pending":
            assert notifications.claim(client, did, "t", 10)
            notifications.finish(client, did, "t", {"webhook": "ops", "status": status}, now)
    lags = scene_lags(now)
    replication.publish_lags(client, lags)
    replication.publish_applied(client, [
        Applied("ledger", "ledger.jsonl", "core-a", 900, 30, 30, None, 2, "core-b", now),
        Applied("ledger", "ledger.db", "core-a", 4096, None, None, "9f" * 32, 2, "core-b", now),
        Applied("ledger", "ledger.jsonl", "core-b", 900, 30, 30, None, 1, "core-a", now - 200)])
    replication.write_mode(client, SyncMode("ledger", "degraded", "core-b", 2, now - 40,
                                            "0 of 1 standby(s) connected"))
    return Scene(client, bp, now, state, rid, bp_path, lags)


def exporter_for(scene: Scene, webhooks: tuple[str, ...] = ("ops",)) -> Exporter:
    return Exporter(lambda: scene.client, lambda: scene.bp, lambda: webhooks,
                    PulseCheck(scene.state / "pulse_history.jsonl"), background=False)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}, parsed by prometheus_client's own parser."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def scrape(exporter: Exporter) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """One real HTTP scrape of ``exporter`` served on a free port."""
    server = serve(exporter, 0, "127.0.0.1")
    assert server is not None
    try:
        return parse(get(server.url))
    finally:
        server.close()


def value(scraped: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float | None:
    return scraped.get(name, {}).get(tuple(sorted(labels.items())))


# --- PromQL: which metric names an expression reads ---------------------------------------------------------------
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
            "inf", "nan"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names ``expr`` selects: identifiers that are not functions, keywords, label names, label values,
    durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    text = re.sub(r"\$\{?\w+\}?", "5m", text)  # Grafana variables ($__rate_interval, ${x})
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    found = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        after = text[m.end():].lstrip()
        if after.startswith("(") or word.lower() in KEYWORDS:
            continue
        found.add(word)
    return found


# --- a webhook receiver -------------------------------------------------------------------------------------------
class Receiver:
    """A webhook receiver: records every POST; can be down (nothing listening), up, or answering an error."""

    def __init__(self) -> None:
        self.port = free_port()
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"
