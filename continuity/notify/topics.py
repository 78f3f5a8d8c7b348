"""Which pulse events people are told about, and in what words: :func:`notice_for`.

A pulse event is the layer's own record; a notice is the sentence a person on call reads. Six topics come from
the events whose writer the catalogue names (:mod:`continuity.events`), so a renamed kind or field breaks here at
import or in the unit tests rather than silently in production:

=====================  =====================================================  ==========
topic                  from                                                   severity
=====================  =====================================================  ==========
failover.completed     ``failover.completed`` (failovers and switchovers)     warning
failover.escalated     ``failover.escalated``, ``failover.failed``            critical
drill.failed           ``drill.finished`` with a status other than passed     warning
node.dead              ``detect.node_dead``                                   critical
mode.changed           ``detect.mode_changed`` (not the first sweep's)        critical / warning / info (back to normal)
backup.failed          ``backup.snapshot_failed``, ``backup.verify_failed``   warning
=====================  =====================================================  ==========

Three more are conditions nothing writes an event for (a backup that went stale, a pause left in place, a standby
lagging past its RPO): the layer watches for them itself, :mod:`continuity.notify.conditions`.

Pure: an event dict in, a :class:`Notice` (or None) out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from continuity.events import (
    BACKUP_SNAPSHOT_FAILED,
    BACKUP_VERIFY_FAILED,
    DETECT_MODE_CHANGED,
    DETECT_NODE_DEAD,
    DRILL_FINISHED,
    FAILOVER_COMPLETED,
    FAILOVER_ESCALATED,
    FAILOVER_FAILED,
    lookup,
)

# the topics people subscribe to; the two failover ones are named after the event they come from
FAILOVER = FAILOVER_COMPLETED.name
ESCALATED = FAILOVER_ESCALATED.name
DRILL = "drill.failed"
NODE_DEAD = "node.dead"
MODE = "mode.changed"
BACKUP = "backup.failed"
# conditions the layer watches itself (:mod:`continuity.notify.conditions`): told when they start and when they end
BACKUP_STALE = "backup.stale"
PAUSE_OVERDUE = "pause.overdue"
REPLICATION_LAG = "replication.lag"
CONDITIONS = (BACKUP_STALE, PAUSE_OVERDUE, REPLICATION_LAG)
TOPICS = (FAILOVER, ESCALATED, DRILL, NODE_DEAD, MODE, BACKUP, *CONDITIONS)


@dataclass(frozen=True)
class Notice:
    """What one webhook delivery says, whatever its format."""

    topic: str
    severity: str  # critical | warning | info
    title: str
    text: str
    event_id: str
    at: float
    kind: str  # the pulse event kind, short form
    labels: dict[str, str] = field(default_factory=dict)  # service / node / scenario / set, where they apply
    resolved: bool = False  # a return to normal (Alertmanager's "resolved")
    # a watched condition's episode (its firing and its resolved notice share it, as an Alertmanager alert's
    # fingerprint) and the time it began; empty / None for a notice made from one pulse event
    episode: str = ""
    since: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"topic": self.topic, "severity": self.severity, "title": self.title, "text": self.text,
               "event_id": self.event_id, "at": self.at, "kind": self.kind, "labels": dict(self.labels),
               "resolved": self.resolved}
        if self.episode:
            out.update(episode=self.episode, since=self.since)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Notice:
        since = d.get("since")
        return cls(str(d["topic"]), str(d["severity"]), str(d["title"]), str(d["text"]), str(d["event_id"]),
                   float(d["at"]), str(d["kind"]), {str(k): str(v) for k, v in (d.get("labels") or {}).items()},
                   bool(d.get("resolved")), str(d.get("episode") or ""), None if since is None else float(since))


def _secs(value: Any) -> str:
    try:
        return f"{float(value):.1f}s"
    except (TypeError, ValueError):
        return "unknown"


Build = Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[str, str, str, str, dict[str, str]] | None]


def _failover(ev: Mapping[str, Any], d: Mapping[str, Any]) -> tuple[str, str, str, str, dict[str, str]]:
    svc = ev.get("service") or "?"
    title = f"{svc} failed over: {d.get('from') or '?'} → {d.get('to') or d.get('node') or '?'}"
    text = (f"Recovered in {_secs(d.get('mttr'))} (detection {_secs(d.get('detection'))}), serving at epoch "
            f"{ev.get('epoch') if ev.get('epoch') is not None else '?'}; by {d.get('who') or '?'}, record "
            f"{d.get('record')}.")
    return FAILOVER, "warning", title, text, {"service": str(svc)}


def _escalated(ev: Mapping[str, Any], d: Mapping[str, Any]) -> tuple[str, str, str, str, dict[str, str]]:
    svc = ev.get("service") or "?"
    title = f"{svc}: failover {d.get('outcome') or 'escalated'}, a human must act"
    text = (f"{d.get('reason') or 'no usable candidate'}. Old primary {d.get('from') or '?'}; record "
            f"{d.get('record')}. See `continuity failover show {d.get('record')}` and the runbook.")
    return ESCALATED, "critical", title, text, {"service": str(svc)}


def _drill(ev: Mapping[str, Any], d: Mapping[str, Any]) -> tuple[str, str, str, str, dict[str, str]] | None:
    if d.get("status") == "passed":
        return None
    scenario = str(d.get("scenario") or "?")
    title = f"drill {scenario} {d.get('status') or 'failed'}"
    text = (f"MTTR {_secs(d.get('mttr'))}, detection {_secs(d.get('detection'))}, "
            f"{d.get('data_lost') if d.get('data_lost') is not None else 'unknown'} acknowledged writes lost, "
            f"{d.get('failovers') or 0} failover(s). Postmortem draft: `continuity drill postmortem {d.get('drill')}`.")
    return DRILL, "warning", title, text, {"scenario": scenario}


def _dead(ev: Mapping[str, Any], d: Mapping[str, Any]) -> tuple[str, str, str, str, dict[str, str]]:
    node = str(d.get("node") or ev.get("node") or "?")
    title = f"node {node} declared dead"
    text = (f"Silent for {_secs(d.get('silence'))} (was {d.get('from') or '?'}); its services fail over to their "
            "standbys unless failover is paused.")
    return NODE_DEAD, "critical", title, text, {"node": node}


def _mode(ev: Mapping[str, Any], d: Mapping[str, Any]) -> tuple[str, str, str, str, dict[str, str]] | None:
    old, new = d.get("from"), str(d.get("to") or "?")
    if old is None:  # the first sweep of a fleet states its mode; nothing changed
        return None
    severity = {"critical": "critical", "normal": "info"}.get(new, "warning")
    unhealthy = ", ".join(str(s) for s in d.get("unhealthy") or []) or "none"
    title = f"continuity mode {old} → {new}"
    text = f"Unhealthy services: {unhealthy}; shed tiers: {list(d.get('shed_tiers') or []) or 'none'}."
    return MODE, severity, title, text, {"mode": new}


def _backup(ev: Mapping[str, Any], d: Mapping[str, Any]) -> tuple[str, str, str, str, dict[str, str]]:
    what = "restore drill" if str(ev.get("kind", "")).endswith("verify_failed") else "snapshot"
    set_id = str(d.get("set") or "?")
    title = f"backup {what} of {set_id} failed"
    detail = d.get("error") or (f"{len(d.get('damaged') or [])} damaged file(s)" if d.get("damaged") else "")
    text = f"{detail or 'see the pulse history'} (on {ev.get('node') or '?'})."
    return BACKUP, "warning", title, text, {"set": set_id}


BUILDERS: dict[str, Build] = {
    FAILOVER_COMPLETED.name: _failover,
    FAILOVER_ESCALATED.name: _escalated,
    FAILOVER_FAILED.name: _escalated,
    DRILL_FINISHED.name: _drill,
    DETECT_NODE_DEAD.name: _dead,
    DETECT_MODE_CHANGED.name: _mode,
    BACKUP_SNAPSHOT_FAILED.name: _backup,
    BACKUP_VERIFY_FAILED.name: _backup,
}


def notice_for(event: Mapping[str, Any]) -> Notice | None:
    """The notice a pulse event makes, or None when nobody is told about it."""
    kind = lookup(str(event.get("kind", "")))
    if kind is None or kind.name not in BUILDERS or not event.get("id"):
        return None
    data = event.get("data") if isinstance(event.get("data"), Mapping) else {}
    built = BUILDERS[kind.name](event, data)
    if built is None:
        return None
    topic, severity, title, text, labels = built
    try:
        at = float(event.get("ts") or 0.0)
    except (TypeError, ValueError):
        at = 0.0
    return Notice(topic, severity, title, text, str(event["id"]), at, kind.name, labels,
                  resolved=topic == MODE and severity == "info")
