"""Every metric the exporter emits: name, type, labels, what it means and where its value comes from.

Declared once, like the pulse events (:mod:`continuity.events`): :mod:`continuity.metrics.compute` can only emit a
metric declared here with exactly its labels (a sample with other labels raises), the generated section of
``docs/continuity/metrics.md`` lists the same table, and the tests check the alert rules and the Grafana dashboard
against what a real scrape contains.

Conventions (Prometheus's): every name starts with ``continuity_``; units are in the name (``_seconds``,
``_bytes``) and are base units; counters end in ``_total``; times are unix ``_timestamp_seconds`` (so PromQL can
take ``time() - x``), and the few ``_age_seconds`` gauges are the same ages computed at scrape time for people
reading ``continuity metrics`` without PromQL. States are one series per possible state with value 1 for the
current one and 0 for the others (a "state set"), so an alert can match ``== 1`` and a graph shows transitions.
Labels carry only names bounded by configuration (node, service, backup set, scenario, webhook, event kind):
never an id, an epoch or a time. Replication is per service and standby node, not per source (a service's few
declared files): the worst lag over its sources is what a failover to that standby would lose, and `continuity
status` shows each source.

Series that describe the fleet (everything read from Redis) are the same from every exporter of the fleet;
``continuity_pulse_*`` describe the history file of the exporter's own host.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PREFIX = "continuity_"


@dataclass(frozen=True)
class Metric:
    name: str  # as exposed; a counter's name ends in _total
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...]
    source: str  # where the value comes from, for the documentation
    note: str = ""  # when it is absent, or another caveat

    @property
    def family(self) -> str:
        """The metric family's name (prometheus_client adds ``_total`` to a counter's samples itself)."""
        return self.name[: -len("_total")] if self.kind == "counter" else self.name


METRICS: dict[str, Metric] = {}


def _m(kind: Literal["gauge", "counter"], name: str, help_: str, labels: Iterable[str] = (), *, source: str,
       note: str = "") -> Metric:
    metric = Metric(PREFIX + name, kind, help_, tuple(labels), source, note)
    assert metric.name not in METRICS, metric.name
    assert (kind == "counter") == metric.name.endswith("_total"), f"{metric.name}: only counters end in _total"
    METRICS[metric.name] = metric
    return metric


def gauge(name: str, help_: str, *labels: str, source: str, note: str = "") -> Metric:
    return _m("gauge", name, help_, labels, source=source, note=note)


def counter(name: str, help_: str, *labels: str, source: str, note: str = "") -> Metric:
    return _m("counter", name, help_, labels, source=source, note=note)


STATUS = "`continuity status --json`"
REPORT = "`continuity report --json`"
BACKUP = "backup status in Redis (`backup:<set>`), ops/backup/continuity.yml"

# --- the exporter itself -----------------------------------------------------------------------------------------
UP = gauge("up", "1 when this scrape could read the fleet's state from Redis, 0 when it could not (then only the "
                 "pulse file series follow).", source="the exporter")
READ_SECONDS = gauge("read_duration_seconds", "Seconds this scrape spent reading the fleet's state.",
                     source="the exporter")

# --- fleet ---------------------------------------------------------------------------------------------------------
MODE = gauge("mode", "Continuity mode: 1 for the current one (normal, degraded, critical, unknown).", "mode",
             source=STATUS + " `mode`")
DETECTOR_LAST_SWEEP = gauge("detector_last_sweep_timestamp_seconds", "When the failure detector last swept.",
                            source=STATUS + " `detector.last_sweep`", note="absent until a detector ran")
DETECTOR_STALE = gauge("detector_stale", "1 when the detector has not swept for too long: node states and the mode "
                                         "are then not current.", source=STATUS + " `detector.stale`",
                       note="absent until a detector ran")
INCIDENTS_OPEN = gauge("incidents_open", "Open incidents (a failover that escalated, a failover storm).",
                       source="`continuity failover status --json` `incidents`")
CONFIG_ERRORS = gauge("config_errors", "Configuration files a running process cannot load (it keeps the last good "
                                       "content).", source=STATUS + " `config_errors`")

# --- nodes ---------------------------------------------------------------------------------------------------------
NODE_STATE = gauge("node_state", "Detector state of each node: 1 for the current one (alive, suspect, dead, "
                                 "expected-offline, unknown).", "node", "state",
                   source=STATUS + " `nodes[].state` (a stale detector's verdict counts as unknown)")
NODE_LAST_SEEN = gauge("node_last_seen_timestamp_seconds", "Last sign of life of the node (heartbeat or ping).",
                       "node", source=STATUS + " `nodes[].last_seen`", note="absent for a node never seen")
NODE_HEARTBEAT_AGE = gauge("node_heartbeat_age_seconds", "Seconds since the node's last sign of life.", "node",
                           source=STATUS + " `nodes[].seen_ago`", note="absent for a node never seen")
NODE_QUEUE = gauge("node_queue_messages", "Tasks waiting on the node's own queue.", "node",
                   source=STATUS + " `nodes[].queue_depth`")
NODE_IN_CONTACT = gauge("node_in_contact", "1 inside the node's declared contact windows (always 1 for core nodes), "
                                           "0 in a planned blackout.", "node", source=STATUS + " `nodes[].in_contact`")

# --- services ------------------------------------------------------------------------------------------------------
SERVICE_INFO = gauge("service_info", "1 for every declared service, with its domain and tier.", "service", "domain",
                     "tier", source="the blueprint")
SERVICE_PRIMARY = gauge("service_primary", "1 on the node that is the service's primary now, 0 on its other "
                                           "declared nodes.", "service", "node",
                        source=STATUS + " `services[].primary`")
SERVICE_EPOCH = gauge("service_epoch", "The service's fencing epoch (goes up with every role change).", "service",
                      source=STATUS + " `services[].epoch`")
SERVICE_RTO = gauge("service_rto_objective_seconds", "Declared recovery time objective.", "service",
                    source=REPORT + " `services.<id>.rto.declared`")
SERVICE_RPO = gauge("service_rpo_objective_seconds", "Declared recovery point objective.", "service",
                    source=REPORT + " `services.<id>.rpo.declared`")
SERVICE_RTO_MEASURED = gauge("service_rto_measured_seconds", "Recovery time measured by drills: the latest drill "
                                                             "that measured it, and the worst of the last N.",
                             "service", "window", source=REPORT + " `services.<id>.rto.latest|worst`",
                             note="absent until a drill measured it")
SERVICE_RPO_MEASURED = gauge("service_rpo_measured_seconds", "Data loss measured by drills (achieved RPO): latest "
                                                             "and worst of the last N.", "service", "window",
                             source=REPORT + " `services.<id>.rpo.latest|worst`",
                             note="absent until a drill measured it")
SERVICE_VERDICT = gauge("service_verdict", "Scorecard verdict of the service: 1 for the current one (pass, fail, "
                                           "untested).", "service", "verdict",
                        source=REPORT + " `services.<id>.verdict`")
SCORECARD_VERDICT = gauge("scorecard_verdict", "Overall scorecard verdict: 1 for the current one.", "verdict",
                          source=REPORT + " `verdict`")
SERVICE_FAILOVERS = counter("service_failovers_total", "Closed failover records by kind (failover, switchover, "
                                                       "forced) and outcome (succeeded, failed, escalated, superseded)",
                            "service", "kind", "outcome", source="failover records (`continuity failover history`)",
                            note="every combination is present from the start (0), so `increase()` sees the first")
SERVICE_LAST_FAILOVER = gauge("service_last_failover_timestamp_seconds", "When the service's newest failover or "
                                                                         "switchover started.", "service",
                              source="failover records", note="absent for a service never failed over")
SERVICE_LAST_MTTR = gauge("service_last_failover_mttr_seconds", "Recovery time of the newest failover that "
                                                                "completed: the old primary's last sign of life to the "
                                                                "new one verified.", "service",
                          source="failover records (`mttr`)", note="absent until one completed")
SERVICE_LAST_DETECTION = gauge("service_last_failover_detection_seconds", "Detection time of the newest failover "
                                                                          "the detector started: last sign of life "
                                                                          "to declared dead.", "service",
                               source="failover records (`detection`)",
                               note="absent until the detector failed the service over (switchovers detect nothing)")
SERVICE_LOCAL_RESTARTS = counter("service_local_restarts_total", "Restarts in place by a node's agent (the local "
                                                                 "recovery ladder, before any failover).", "service",
                                 source="pulse counters (`failover.service_restarted` events)",
                                 note="counted since the fleet first ran with pulse counters")
SERVICE_PAUSED = gauge("service_failover_paused", "1 while automatic failover of the service is paused (for it or "
                                                  "fleet-wide) and the pause is in force.", "service",
                       source="`continuity failover status --json` `services[].paused`")
FAILOVERS_RUNNING = gauge("failovers_running", "Failover records still running (not in the counter until they close).",
                          source="failover records")

# --- replication ---------------------------------------------------------------------------------------------------
REPL = "replication state in Redis (`replication:lag|applied|mode:<service>`), as `continuity status --json` shows it"
REPLICATION_MODE = gauge("replication_mode", "How the service's declared data reaches its standbys: 1 for the current "
                                             "mode (sync, degraded: a sync service acknowledging writes without its "
                                             "standbys, async, off: nothing to replicate).", "service", "mode",
                         source=STATUS + " `services[].replication`")
REPLICATION_SYNC_STANDBYS = gauge("replication_sync_standbys", "Standbys that must hold a write before a sync "
                                                               "service acknowledges it.", "service",
                                  source="the blueprint (`replication.standbys`)", note="absent unless mode is sync")
REPLICATION_STANDBY_STATE = gauge("replication_standby_state", "State of each standby's copy as the current primary "
                                                               "sees it, the worst over the service's sources: 1 for "
                                                               "the current one (streaming, catchup, disconnected, "
                                                               "unknown: the primary publishes nothing recent).",
                                  "service", "node", "state", source=REPL + " `replication[].state`",
                                  note="for every node of the placement other than the primary, in replicated "
                                       "services")
REPLICATION_LAG_SECONDS = gauge("replication_lag_seconds", "How long the oldest change a standby lacks has been "
                                                           "waiting (0 when it holds everything), the worst over the "
                                                           "service's sources: what a failover to it now would lose.",
                                "service", "node", source=REPL + " `replication[].lag_seconds`",
                                note="absent while the primary publishes nothing recent about the standby")
REPLICATION_LAG_RECORDS = gauge("replication_lag_records", "Ledger records a standby lacks, summed over the service's "
                                                           "ledger sources.", "service", "node",
                                source=REPL + " `replication[].lag_records`",
                                note="absent as lag_seconds, and for services without a ledger source")
REPLICATION_LAG_BYTES = gauge("replication_lag_bytes", "Bytes a standby lacks, summed over the service's sources.",
                              "service", "node", source=REPL + " `replication[].lag_bytes`",
                              note="absent as lag_seconds")
REPLICATION_APPLIED_RECORDS = gauge("replication_applied_records", "Ledger records the node says it holds durably "
                                                                   "as a standby (what a failover's candidate would "
                                                                   "start from), summed over ledger sources.",
                                    "service", "node", source=REPL + " `replication:applied:<service>` `count`",
                                    note="absent for the current primary and for nodes that never applied a ledger")

# --- failover pauses -----------------------------------------------------------------------------------------------
PAUSE_STARTED = gauge("failover_pause_started_timestamp_seconds", "When a failover pause still recorded was set; "
                                                                  "scope is the service or `all`.", "scope",
                      source="failover pauses (`continuity failover status --json` `pauses`)")
PAUSE_EXPIRY = gauge("failover_pause_expiry_timestamp_seconds", "The declared end of a pause (`pause --for/--until`).",
                     "scope", source="failover pauses", note="absent for a pause without a declared end")
PAUSE_EXPIRED = gauge("failover_pause_expired", "1 for a pause still recorded after its declared end (it no longer "
                                                "blocks failover; someone forgot to resume).", "scope",
                      source="failover pauses")

# --- backups -------------------------------------------------------------------------------------------------------
BACKUP_LAST_SNAPSHOT = gauge("backup_last_snapshot_timestamp_seconds", "When the set's last snapshot was taken.",
                             "set", source=BACKUP, note="absent until the first snapshot")
BACKUP_SNAPSHOT_AGE = gauge("backup_last_snapshot_age_seconds", "Age of the set's last snapshot (its RPO age).",
                            "set", source=REPORT + " `backups[].last_snapshot_age`",
                            note="absent until the first snapshot")
BACKUP_RPO = gauge("backup_rpo_objective_seconds", "The set's declared RPO.", "set",
                   source=REPORT + " `backups[].target_rpo`", note="absent for a set without `rpo`")
BACKUP_RPO_MET = gauge("backup_rpo_met", "1 when the last snapshot is younger than the set's RPO.", "set",
                       source=REPORT + " `backups[].fresh`",
                       note="absent for a set without `rpo` or without a snapshot yet")
BACKUP_SNAPSHOT_DURATION = gauge("backup_last_snapshot_duration_seconds", "How long the last snapshot took.", "set",
                                 source=BACKUP)
BACKUP_SNAPSHOT_SOURCE = gauge("backup_last_snapshot_source_bytes", "Bytes the last snapshot read from its sources.",
                               "set", source=BACKUP)
BACKUP_REPOSITORY_SIZE = gauge("backup_repository_size_bytes", "Bytes the set's repository stores (packs, indexes, "
                                                               "snapshot records) after its last snapshot or forget.",
                               "set", source=BACKUP)
BACKUP_LAST_DRILL = gauge("backup_last_restore_drill_timestamp_seconds", "When the set's last restore drill ran "
                                                                         "(passed or not).", "set",
                          source=BACKUP + " `last_verify_time`", note="absent until the first one")
BACKUP_LAST_DRILL_AGE = gauge("backup_last_restore_drill_age_seconds", "Seconds since the set's last restore drill "
                                                                       "(passed or not).", "set",
                              source=REPORT + " `backups[].last_verify_age`", note="absent until the first one")
BACKUP_LAST_DRILL_OK = gauge("backup_last_restore_drill_ok", "1 when the last restore drill passed every check.",
                             "set", source=REPORT + " `backups[].last_verify_ok`", note="absent until the first one")
BACKUP_DRILL_DURATION = gauge("backup_last_restore_drill_duration_seconds", "How long the last restore drill took.",
                              "set", source=BACKUP)
BACKUP_LAST_VERIFIED = gauge("backup_last_verified_restore_timestamp_seconds", "When a restore drill of the set last "
                                                                               "passed.", "set", source=BACKUP,
                             note="absent until one passed")
BACKUP_VERIFIED_AGE = gauge("backup_last_verified_restore_age_seconds", "Seconds since a restore drill of the set "
                                                                        "last passed.", "set", source=BACKUP,
                            note="absent until one passed")
BACKUP_VERIFIED_SNAPSHOT_AGE = gauge("backup_verified_snapshot_age_seconds", "Age of the newest snapshot a restore "
                                                                             "drill proved restorable.", "set",
                                     source=REPORT + " `services.<id>.backup.sets[].verified_snapshot_age`",
                                     note="absent until one passed")
BACKUP_SCHEDULE = gauge("backup_schedule_interval_seconds", "Declared interval between snapshots.", "set",
                        source="ops/backup/continuity.yml `schedule`", note="absent for cron schedules")
BACKUP_VERIFY_SCHEDULE = gauge("backup_verify_interval_seconds", "Declared interval between restore drills.", "set",
                               source="ops/backup/continuity.yml `verify.schedule`",
                               note="absent for cron schedules and sets without `verify`")
BACKUP_LAST_FAILURE = gauge("backup_last_failure_timestamp_seconds", "When a backup operation of the set last failed "
                                                                     "(snapshot, verify, forget, copy).", "set",
                            "operation", source=BACKUP + " `last_<operation>_error_time`",
                            note="absent for an operation that never failed")

# --- drills --------------------------------------------------------------------------------------------------------
DRILLS = counter("drills_total", "Chaos drills run, by scenario and final status (passed, failed, aborted).",
                 "scenario", "status", source="drill records (`continuity drill report`)",
                 note="over the newest 5000 drill records")
DRILL_LAST_RUN = gauge("drill_last_run_timestamp_seconds", "When the scenario's newest finished drill started.",
                       "scenario", source="drill records")
DRILL_LAST_AGE = gauge("drill_last_run_age_seconds", "Seconds since the scenario's newest finished drill started.",
                       "scenario", source="drill records")
DRILL_LAST_PASSED = gauge("drill_last_passed", "1 when the scenario's newest finished drill passed.", "scenario",
                          source="drill records")
DRILL_LAST_MTTR = gauge("drill_last_mttr_seconds", "Recovery time the scenario's newest drill measured.", "scenario",
                        source="drill records (`metrics.mttr`)", note="absent when it measured none")
DRILL_LAST_DETECTION = gauge("drill_last_detection_seconds", "Detection time the scenario's newest drill measured.",
                             "scenario", source="drill records (`metrics.detection_time`)",
                             note="absent when it measured none")
DRILL_LAST_RPO = gauge("drill_last_achieved_rpo_seconds", "Data loss (achieved RPO) the scenario's newest drill "
                                                          "measured.", "scenario",
                       source="drill records (`metrics.achieved_rpo`)", note="absent when it measured none")
DRILL_RUNNING = gauge("drill_running", "1 while a drill holds the one-drill lock.", source="the drill lock")

# --- pulse history -------------------------------------------------------------------------------------------------
PULSE_CHAIN = gauge("pulse_chain_events", "Events in this host's hash-chained pulse history file.",
                    source="the history file's head")
PULSE_VERIFY_OK = gauge("pulse_verify_ok", "1 when the last verification of this host's history file found the chain "
                                           "intact (`continuity pulse verify`).", source="the periodic verification",
                        note="absent until the first verification")
PULSE_VERIFIED_AT = gauge("pulse_last_verify_timestamp_seconds", "When this host's history file was last verified.",
                          source="the periodic verification", note="absent until the first verification")
PULSE_EVENTS = counter("pulse_events_total", "Pulse events delivered into the shared stream, by kind (without the "
                                            "`continuity_layer.` prefix).", "kind",
                       source="pulse counters", note="every kind of the event catalogue, 0 until one is written")

# --- notifications -------------------------------------------------------------------------------------------------
NOTIFY_PENDING = gauge("notifications_pending", "Notifications waiting for (another) delivery attempt.", "webhook",
                       source="notification deliveries")
NOTIFY_DELIVERED = counter("notifications_delivered_total", "Notifications the webhook accepted.", "webhook",
                           source="notification deliveries")
NOTIFY_GIVEN_UP = counter("notifications_given_up_total", "Notifications dropped after retrying for the configured "
                                                          "time.", "webhook", source="notification deliveries")


# --- documentation -------------------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


DOC = Path(__file__).resolve().parents[2] / "docs" / "continuity" / "metrics.md"
BEGIN_MARKER = "<!-- BEGIN metrics:generated -->"
END_MARKER = "<!-- END metrics:generated -->"


def render_markdown() -> str:
    """The generated table of ``docs/continuity/metrics.md`` (deterministic: a test compares it)."""
    lines = ["| metric | type | labels | meaning | from | absent when / note |", "|---|---|---|---|---|---|"]
    for m in METRICS.values():
        labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {_cell(m.help)} | {_cell(m.source)} "
                     f"| {_cell(m.note) or '—'} |")
    return "\n".join(lines) + "\n"


def splice(document: str) -> str:
    """``document`` with the text between the markers replaced by :func:`render_markdown`."""
    head, _, rest = document.partition(BEGIN_MARKER + "\n")
    _, _, tail = rest.partition(END_MARKER)
    if not rest or not tail and END_MARKER not in rest:
        raise ValueError(f"{DOC} needs a {BEGIN_MARKER} line followed by a {END_MARKER} line")
    return head + BEGIN_MARKER + "\n" + render_markdown() + END_MARKER + tail


if __name__ == "__main__":  # python -m continuity.metrics.catalogue: regenerate the table in the docs
    DOC.write_text(splice(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"{DOC}: rewritten", file=sys.stderr)
