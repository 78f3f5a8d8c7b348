"""One notice as the body each kind of receiver expects: :func:`render`.

* ``json`` — the notice itself plus the delivery's idempotency key: for scripts, ticketing systems, anything.
* ``slack`` — an incoming-webhook message (``text`` with Slack's markup, one coloured attachment); Mattermost and
  Rocket.Chat accept the same body.
* ``alertmanager`` — the body Alertmanager posts to its webhook receivers (``version: "4"``, one alert), so every
  tool written to receive Alertmanager webhooks (PagerDuty/Opsgenie bridges, chat relays) takes ours unchanged.

Every format carries the idempotency key (``id``; the alert's ``fingerprint``, except for a watched condition, whose
firing and resolved notices share their episode's so Alertmanager tools pair them) and it is also sent as the
``Idempotency-Key`` header: a receiver that keeps the keys it saw can drop the rare duplicate an at-least-once
delivery makes (a loop that died after the POST and before recording it). Pure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from continuity.notify import topics
from continuity.notify.topics import Notice

COLOURS = {"critical": "#d00000", "warning": "#e8a000", "info": "#2eb67d"}
ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":white_check_mark:"}
ALERTNAMES = {topics.FAILOVER: "ContinuityFailoverCompleted", topics.ESCALATED: "ContinuityFailoverEscalated",
              topics.DRILL: "ContinuityDrillFailed", topics.NODE_DEAD: "ContinuityNodeDead",
              topics.MODE: "ContinuityModeChanged", topics.BACKUP: "ContinuityBackupFailed",
              topics.BACKUP_STALE: "ContinuityBackupStale", topics.PAUSE_OVERDUE: "ContinuityFailoverPauseOverdue",
              topics.REPLICATION_LAG: "ContinuityReplicationLagOverRPO"}
NEVER = "0001-01-01T00:00:00Z"  # Alertmanager's "no end time"


def idempotency_key(webhook: str, event_id: str) -> str:
    """Stable for one event and one webhook, whoever delivers it and however often."""
    return hashlib.sha256(f"{webhook}|{event_id}".encode()).hexdigest()[:32]


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def as_json(n: Notice, key: str, fleet: str) -> dict[str, Any]:
    return {"id": key, "fleet": fleet, **n.as_dict(), "time": _iso(n.at)}


def as_slack(n: Notice, key: str, fleet: str) -> dict[str, Any]:
    fields = [{"title": k, "value": v, "short": True} for k, v in sorted(n.labels.items())]
    return {
        "text": f"{ICONS.get(n.severity, '')} *{n.title}* ({fleet})",
        "attachments": [{"color": COLOURS.get(n.severity, "#888888"), "text": n.text, "fields": fields,
                         "footer": f"continuity · {n.topic} · {key}", "ts": int(n.at)}],
    }


def as_alertmanager(n: Notice, key: str, fleet: str, receiver: str) -> dict[str, Any]:
    labels = {"alertname": ALERTNAMES.get(n.topic, "Continuity"), "severity": n.severity, "fleet": fleet,
              "topic": n.topic, **n.labels}
    annotations = {"summary": n.title, "description": n.text}
    status = "resolved" if n.resolved else "firing"
    # a watched condition's firing and resolved notices are one alert to the receiver: one fingerprint, its start
    fingerprint = idempotency_key(receiver, n.episode) if n.episode else key
    starts = n.since if n.since is not None else n.at
    alert = {"status": status, "labels": labels, "annotations": annotations, "startsAt": _iso(starts),
             "endsAt": _iso(n.at) if n.resolved else NEVER, "generatorURL": "", "fingerprint": fingerprint}
    group = {"alertname": labels["alertname"]}
    return {"version": "4", "groupKey": f'{{}}:{{alertname="{labels["alertname"]}"}}', "truncatedAlerts": 0,
            "status": status, "receiver": receiver, "groupLabels": group, "commonLabels": labels,
            "commonAnnotations": annotations, "externalURL": "", "alerts": [alert]}


def render(fmt: str, n: Notice, webhook: str, fleet: str) -> dict[str, Any]:
    key = idempotency_key(webhook, n.event_id)
    if fmt == "slack":
        return as_slack(n, key, fleet)
    if fmt == "alertmanager":
        return as_alertmanager(n, key, fleet, webhook)
    return as_json(n, key, fleet)
