"""The metrics as a pure function of one reading of the fleet: :func:`compute`.

Every number comes from a value some other command already shows (``continuity status --json``, ``continuity
report --json``, the failover and drill records, the backup status), computed by the same functions those
commands use (:func:`continuity.report.scorecard`, the report's per-set backup view): a scrape and a report read
at the same moment agree, and a test holds them to it. No Redis, no clock, no prometheus_client here: the reading
carries the time, and :mod:`continuity.metrics.exporter` turns the samples into exposition.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from continuity import report
from continuity.blueprint import Blueprint
from continuity.events import FAILOVER_SERVICE_RESTARTED, KINDS, short
from continuity.metrics import catalogue as c
from continuity.metrics.catalogue import Metric
from continuity.status import ReplicationSnapshot, current_lags, live_standbys, replication_mode

NODE_STATES = ("alive", "suspect", "dead", "expected-offline", "unknown")
MODES = ("normal", "degraded", "critical", "unknown")
VERDICTS = ("pass", "fail", "untested")
FAILOVER_KINDS = ("failover", "switchover", "forced")
FAILOVER_OUTCOMES = ("succeeded", "failed", "escalated", "superseded")
DRILL_FINAL = ("passed", "failed", "aborted")
BACKUP_OPERATIONS = ("snapshot", "verify", "forget", "copy")
RESTARTED = FAILOVER_SERVICE_RESTARTED.name
REPLICATION_MODES = ("sync", "degraded", "async", "off")
STANDBY_STATES = ("streaming", "catchup", "disconnected", "unknown")
_STANDBY_WORSE = {"streaming": 0, "catchup": 1, "disconnected": 2}  # unknown (or unheard-of) is worst of all


@dataclass(frozen=True)
class Sample:
    metric: Metric
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, name: str) -> str:
        return dict(self.labels)[name]


@dataclass(frozen=True)
class FailoverTally:
    """What the failover records say, per service: closed records by (service, kind, outcome), the newest start,
    the newest completed recovery's MTTR and the newest detector-measured detection time."""

    counts: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    running: int = 0
    last_started: Mapping[str, float] = field(default_factory=dict)
    last_mttr: Mapping[str, float] = field(default_factory=dict)
    last_detection: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PulseFile:
    """This host's history file: events in its chain, and the last verification (None: never verified)."""

    events: int
    verify_ok: bool | None = None
    verified_at: float | None = None


@dataclass(frozen=True)
class NotifyTally:
    pending: int = 0
    delivered: int = 0
    given_up: int = 0


@dataclass(frozen=True)
class BackupSchedule:
    snapshot: float | None = None  # seconds between snapshots (None: cron or unknown)
    verify: float | None = None  # seconds between restore drills (None: cron, none declared, unknown)


@dataclass(frozen=True)
class Reading:
    """One read of everything the metrics show; ``now`` is the time the ages are computed at."""

    now: float
    status: Mapping[str, Any]  # continuity.status.build_report
    backup_sets: Mapping[str, Mapping[str, Any]]  # continuity.report.read_backup_sets
    backup_status: Mapping[str, Mapping[str, Any]]  # continuity.report.read_backup_status
    schedules: Mapping[str, BackupSchedule]
    drills: Sequence[Mapping[str, Any]]  # drill records, any order
    failovers: FailoverTally
    incidents: int
    pulse_counts: Mapping[tuple[str, str | None], int]
    drill_running: bool
    notify: Mapping[str, NotifyTally] = field(default_factory=dict)
    read_seconds: float = 0.0
    replication: ReplicationSnapshot = field(default_factory=ReplicationSnapshot)  # status.read_replication


class Samples:
    """Collects samples, refusing any whose labels are not exactly its metric's declared ones."""

    def __init__(self) -> None:
        self.out: list[Sample] = []

    def add(self, metric: Metric, value: float | int | bool | None, **labels: str) -> None:
        if value is None:
            return
        if tuple(labels) != metric.labels:
            raise ValueError(f"{metric.name}: labels {tuple(labels)} where {metric.labels} are declared")
        self.out.append(Sample(metric, tuple((k, str(v)) for k, v in labels.items()), float(value)))

    def states(self, metric: Metric, current: str, states: Sequence[str], **labels: str) -> None:
        """A state set: one series per state, 1 for ``current``."""
        name = next(n for n in metric.labels if n not in labels)
        for state in states:
            self.add(metric, state == current, **labels, **{name: state})


def _f(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else max(0.0, now - then)


def compute(bp: Blueprint, r: Reading) -> list[Sample]:
    """Every sample of every metric in :mod:`continuity.metrics.catalogue` that has a value in ``r``."""
    s = Samples()
    s.add(c.UP, 1)
    s.add(c.READ_SECONDS, r.read_seconds)
    _fleet(s, r)
    _nodes(s, r)
    card = report.scorecard(bp, r.drills, r.backup_status, r.backup_sets, r.now)
    _services(s, bp, r, card)
    _replication(s, bp, r)
    _pauses(s, r)
    _backups(s, r)
    _drills(s, r)
    for kind in KINDS:
        total = sum(n for (k, _svc), n in r.pulse_counts.items() if short(k) == kind)
        s.add(c.PULSE_EVENTS, total, kind=kind)
    for webhook, tally in sorted(r.notify.items()):
        s.add(c.NOTIFY_PENDING, tally.pending, webhook=webhook)
        s.add(c.NOTIFY_DELIVERED, tally.delivered, webhook=webhook)
        s.add(c.NOTIFY_GIVEN_UP, tally.given_up, webhook=webhook)
    return s.out


def unreachable(read_seconds: float) -> list[Sample]:
    """What a scrape says when the fleet's state could not be read."""
    s = Samples()
    s.add(c.UP, 0)
    s.add(c.READ_SECONDS, read_seconds)
    return s.out


def pulse_file(p: PulseFile) -> list[Sample]:
    """This host's history file (emitted whether or not Redis could be read)."""
    s = Samples()
    s.add(c.PULSE_CHAIN, p.events)
    if p.verify_ok is not None:
        s.add(c.PULSE_VERIFY_OK, p.verify_ok)
    s.add(c.PULSE_VERIFIED_AT, p.verified_at)
    return s.out


def _fleet(s: Samples, r: Reading) -> None:
    mode = str((r.status.get("mode") or {}).get("mode") or "unknown")
    s.states(c.MODE, mode if mode in MODES else "unknown", MODES)
    det = r.status.get("detector")
    if det is not None:
        s.add(c.DETECTOR_LAST_SWEEP, _f(det.get("last_sweep")))
        s.add(c.DETECTOR_STALE, bool(det.get("stale")))
    s.add(c.INCIDENTS_OPEN, r.incidents)
    s.add(c.CONFIG_ERRORS, len(r.status.get("config_errors") or []))


def _nodes(s: Samples, r: Reading) -> None:
    for n in r.status["nodes"]:
        node = str(n["id"])
        state = str(n.get("state") or "unknown")
        s.states(c.NODE_STATE, state if state in NODE_STATES else "unknown", NODE_STATES, node=node)
        s.add(c.NODE_LAST_SEEN, _f(n.get("last_seen")), node=node)
        s.add(c.NODE_HEARTBEAT_AGE, _age(r.now, _f(n.get("last_seen"))), node=node)
        s.add(c.NODE_QUEUE, n.get("queue_depth") or 0, node=node)
        s.add(c.NODE_IN_CONTACT, bool(n.get("in_contact")), node=node)


def _paused_now(r: Reading) -> set[str]:
    """Scopes whose pause is in force (not past its declared end)."""
    return {scope for scope, note in (r.status.get("pauses") or {}).items() if not note.get("expired")}


def _services(s: Samples, bp: Blueprint, r: Reading, card: Mapping[str, Any]) -> None:
    paused = _paused_now(r)
    restarts: dict[str, int] = {}
    for (kind, svc), n in r.pulse_counts.items():
        if svc and short(kind) == RESTARTED:
            restarts[svc] = restarts.get(svc, 0) + n
    for sv in r.status["services"]:
        sid = str(sv["id"])
        view = bp.services.get(sid)
        s.add(c.SERVICE_INFO, 1, service=sid, domain=str(sv.get("domain")), tier=str(sv.get("tier")))
        current = sv.get("primary")
        declared = (view.primary, *view.standbys) if view else ()
        for node in dict.fromkeys([*declared, *([current] if current else [])]):
            s.add(c.SERVICE_PRIMARY, node == current, service=sid, node=str(node))
        s.add(c.SERVICE_EPOCH, sv.get("epoch") or 0, service=sid)
        s.add(c.SERVICE_PAUSED, "*" in paused or sid in paused, service=sid)
        row = card["services"].get(sid)
        if row is not None:
            s.add(c.SERVICE_RTO, row["rto"]["declared"], service=sid)
            s.add(c.SERVICE_RPO, row["rpo"]["declared"], service=sid)
            for window in ("latest", "worst"):
                s.add(c.SERVICE_RTO_MEASURED, row["rto"][window], service=sid, window=window)
                s.add(c.SERVICE_RPO_MEASURED, row["rpo"][window], service=sid, window=window)
            s.states(c.SERVICE_VERDICT, row["verdict"], VERDICTS, service=sid)
        for kind in FAILOVER_KINDS:
            for outcome in FAILOVER_OUTCOMES:
                s.add(c.SERVICE_FAILOVERS, r.failovers.counts.get((sid, kind, outcome), 0), service=sid, kind=kind,
                      outcome=outcome)
        s.add(c.SERVICE_LAST_FAILOVER, r.failovers.last_started.get(sid), service=sid)
        s.add(c.SERVICE_LAST_MTTR, r.failovers.last_mttr.get(sid), service=sid)
        s.add(c.SERVICE_LAST_DETECTION, r.failovers.last_detection.get(sid), service=sid)
        s.add(c.SERVICE_LOCAL_RESTARTS, restarts.get(sid, 0), service=sid)
    s.states(c.SCORECARD_VERDICT, card["verdict"], VERDICTS)
    s.add(c.FAILOVERS_RUNNING, r.failovers.running)


@dataclass(frozen=True)
class StandbyView:
    """One declared standby of a service, summed over its sources, as the metrics show it (and the
    ``replication.lag`` notifications judge it): the worst state, the largest lag in seconds (None: nothing
    current is published about it), the records and bytes it lacks."""

    service: str
    node: str
    state: str
    lag_seconds: float | None = None
    lag_records: int | None = None
    lag_bytes: int | None = None


def standby_views(bp: Blueprint, sid: str, primary: str | None, repl: ReplicationSnapshot,
                  now: float) -> list[StandbyView]:
    """Per standby of ``sid`` (the placement's nodes but the current primary), from the rows
    :func:`continuity.status.current_lags` picks, so a scrape shows what ``status`` shows."""
    lags = current_lags(repl, sid, primary, now)
    out = []
    for node in live_standbys(bp, sid, primary):
        mine = [lag for lag in lags if lag.standby == node]
        worst = max((str(lag.state) for lag in mine), key=lambda st: _STANDBY_WORSE.get(st, 3), default="unknown")
        state = worst if worst in _STANDBY_WORSE else "unknown"
        if not mine:
            out.append(StandbyView(sid, node, state))
            continue
        records = [lag.lag_records for lag in mine if lag.lag_records is not None]
        out.append(StandbyView(sid, node, state, max(lag.lag_seconds for lag in mine),
                               sum(records) if records else None, sum(lag.lag_bytes for lag in mine)))
    return out


def _replication(s: Samples, bp: Blueprint, r: Reading) -> None:
    """Per service its mode; per standby its state and lag as the current primary published them.

    The rows are chosen by :func:`continuity.status.current_lags`, so a scrape shows what ``status`` shows: a row
    from a former primary or a silent replicator is not a lag, and the standby's state is then ``unknown``
    (an alert on the state catches a replicator that stopped, which a lag series that merely vanished would not).
    """
    for sv in r.status["services"]:
        sid = str(sv["id"])
        view = bp.services.get(sid)
        if view is None:
            continue
        primary = sv.get("primary")
        shown = replication_mode(bp, sid, r.replication, primary)  # sync(N), degraded, async, off, or -
        mode = "sync" if shown.startswith("sync") else shown if shown in REPLICATION_MODES else "off"
        s.states(c.REPLICATION_MODE, mode, REPLICATION_MODES, service=sid)
        if view.replication.mode == "sync":
            s.add(c.REPLICATION_SYNC_STANDBYS, view.replication.need, service=sid)
        if mode == "off":
            continue
        standbys = live_standbys(bp, sid, primary)  # labels only for declared nodes, whatever Redis holds
        for sb in standby_views(bp, sid, primary, r.replication, r.now):
            node = sb.node
            s.states(c.REPLICATION_STANDBY_STATE, sb.state, STANDBY_STATES, service=sid, node=node)
            s.add(c.REPLICATION_LAG_SECONDS, sb.lag_seconds, service=sid, node=node)
            s.add(c.REPLICATION_LAG_RECORDS, sb.lag_records, service=sid, node=node)
            s.add(c.REPLICATION_LAG_BYTES, sb.lag_bytes, service=sid, node=node)
        held: dict[str, int] = {}
        for a in r.replication.applied.get(sid, []):
            if a.node in standbys and a.count is not None:
                held[a.node] = held.get(a.node, 0) + a.count
        for node, count in sorted(held.items()):
            s.add(c.REPLICATION_APPLIED_RECORDS, count, service=sid, node=node)


@dataclass(frozen=True)
class PauseCheck:
    """One failover pause as the metrics show it (and the ``pause.overdue`` notifications judge it): ``scope`` is
    a service or ``all``; ``expired``: past its declared end (worked out by :func:`continuity.state.controls.
    pause_in_force`, through the status report)."""

    scope: str
    started: float | None
    until: float | None
    expired: bool


def pause_checks(pauses: Mapping[str, Mapping[str, Any]]) -> list[PauseCheck]:
    """The status report's ``pauses`` (scope -> note), ``*`` named ``all``."""
    return [PauseCheck("all" if scope == "*" else scope, _f(note.get("at")), _f(note.get("until")),
                       bool(note.get("expired")))
            for scope, note in sorted(pauses.items())]


def _pauses(s: Samples, r: Reading) -> None:
    for p in pause_checks(r.status.get("pauses") or {}):
        s.add(c.PAUSE_STARTED, p.started, scope=p.scope)
        s.add(c.PAUSE_EXPIRY, p.until, scope=p.scope)
        s.add(c.PAUSE_EXPIRED, p.expired, scope=p.scope)


@dataclass(frozen=True)
class BackupCheck:
    """One backup set's freshness as the metrics and the alert rules judge it (and the ``backup.stale``
    notifications, :mod:`continuity.notify.conditions`): one computation, so the three cannot disagree."""

    set: str
    snapshot_age: float | None  # None: no snapshot yet
    rpo: float | None  # the set's declared RPO (None: none declared)
    rpo_met: bool | None  # None: no snapshot or no RPO to judge by
    verified_at: float | None  # the last restore drill that passed
    verified_age: float | None
    schedule: float | None  # seconds between snapshots (None: cron or unknown)
    verify_schedule: float | None  # seconds between restore drills (None: cron, none declared)


def backup_checks(sets: Mapping[str, Mapping[str, Any]], status: Mapping[str, Mapping[str, Any]],
                  schedules: Mapping[str, BackupSchedule], now: float) -> list[BackupCheck]:
    """Per configured set, from the report's own per-set view (``report --json`` ``backups``)."""
    out = []
    for row in report.backup_freshness(sets, status, now):
        st = status.get(row["set"]) or {}
        passed = _f(st.get("last_verified_time"))
        if passed is None and row["last_verify_ok"]:  # written before last_verified_time existed
            passed = _f(st.get("last_verify_time"))
        sched = schedules.get(row["set"]) or BackupSchedule()
        out.append(BackupCheck(row["set"], row["last_snapshot_age"], row["target_rpo"], row["fresh"], passed,
                               _age(now, passed), sched.snapshot, sched.verify))
    return out


def _backups(s: Samples, r: Reading) -> None:
    # the report's own per-set view (``report --json`` ``backups``): the two cannot disagree on age or freshness
    rows = {row["set"]: row for row in report.backup_freshness(r.backup_sets, r.backup_status, r.now)}
    for chk in backup_checks(r.backup_sets, r.backup_status, r.schedules, r.now):
        set_id, row = chk.set, rows[chk.set]
        st = r.backup_status.get(set_id) or {}
        s.add(c.BACKUP_LAST_SNAPSHOT, _f(st.get("last_snapshot_time")), set=set_id)
        s.add(c.BACKUP_SNAPSHOT_AGE, chk.snapshot_age, set=set_id)
        s.add(c.BACKUP_RPO, chk.rpo, set=set_id)
        s.add(c.BACKUP_RPO_MET, chk.rpo_met, set=set_id)
        s.add(c.BACKUP_SNAPSHOT_DURATION, _f(st.get("last_snapshot_duration")), set=set_id)
        s.add(c.BACKUP_SNAPSHOT_SOURCE, _f(st.get("last_snapshot_bytes")), set=set_id)
        s.add(c.BACKUP_REPOSITORY_SIZE, _f(st.get("repository_bytes")), set=set_id)
        s.add(c.BACKUP_LAST_DRILL, _f(st.get("last_verify_time")), set=set_id)
        s.add(c.BACKUP_LAST_DRILL_AGE, row["last_verify_age"], set=set_id)
        s.add(c.BACKUP_LAST_DRILL_OK, row["last_verify_ok"], set=set_id)
        s.add(c.BACKUP_DRILL_DURATION, _f(st.get("last_verify_duration")), set=set_id)
        s.add(c.BACKUP_LAST_VERIFIED, chk.verified_at, set=set_id)
        s.add(c.BACKUP_VERIFIED_AGE, chk.verified_age, set=set_id)
        s.add(c.BACKUP_VERIFIED_SNAPSHOT_AGE, _age(r.now, _f(st.get("last_verified_snapshot_time"))), set=set_id)
        s.add(c.BACKUP_SCHEDULE, chk.schedule, set=set_id)
        s.add(c.BACKUP_VERIFY_SCHEDULE, chk.verify_schedule, set=set_id)
        for op in BACKUP_OPERATIONS:
            s.add(c.BACKUP_LAST_FAILURE, _f(st.get(f"last_{op}_error_time")), set=set_id, operation=op)


def _newest_first(drills: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    return iter(sorted(drills, key=lambda d: _f(d.get("started")) or 0.0, reverse=True))


def _drills(s: Samples, r: Reading) -> None:
    counts: dict[tuple[str, str], int] = {}
    latest: dict[str, Mapping[str, Any]] = {}
    for d in _newest_first(r.drills):
        status = str(d.get("status"))
        if status not in DRILL_FINAL:
            continue
        scenario = str(d.get("scenario") or d.get("id"))
        counts[(scenario, status)] = counts.get((scenario, status), 0) + 1
        latest.setdefault(scenario, d)
    for (scenario, status), n in sorted(counts.items()):
        s.add(c.DRILLS, n, scenario=scenario, status=status)
    for scenario, d in sorted(latest.items()):
        started = _f(d.get("started"))
        m = d.get("metrics") or {}
        s.add(c.DRILL_LAST_RUN, started, scenario=scenario)
        s.add(c.DRILL_LAST_AGE, _age(r.now, started), scenario=scenario)
        s.add(c.DRILL_LAST_PASSED, d.get("status") == "passed", scenario=scenario)
        s.add(c.DRILL_LAST_MTTR, _f(m.get("mttr")), scenario=scenario)
        s.add(c.DRILL_LAST_DETECTION, _f(m.get("detection_time")), scenario=scenario)
        s.add(c.DRILL_LAST_RPO, _f(m.get("achieved_rpo")), scenario=scenario)
    s.add(c.DRILL_RUNNING, r.drill_running)
