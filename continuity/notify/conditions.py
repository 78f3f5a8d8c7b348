"""Conditions the layer watches for itself: nothing writes a pulse event when a backup goes stale, a pause is
forgotten or a standby falls behind, so nobody would be told. :func:`evaluate` says which hold now; :func:`changes`
compares that with the episodes already open and says which notices to send: one when an episode begins, one
(``resolved``) when it ends, nothing while it lasts.

=====================  ===================================================================  ========================
topic                  holds when                                                           one episode per
=====================  ===================================================================  ========================
backup.stale           the set's last snapshot is older than its RPO (``rpo_met`` false);   set and check
                       with no RPO declared, older than ``snapshot_schedules`` x its        (``snapshot``/``restore``)
                       interval — or its last verified restore is older than
                       ``verify_schedules`` x its restore-drill interval
pause.overdue          a failover pause is past its declared end, or has none and is        scope
                       older than ``pause_without_expiry``
replication.lag        a standby's lag (the largest over its sources) exceeds its           service and standby
                       service's declared RPO
=====================  ===================================================================  ========================

Every number is the one the metrics export, computed by the same functions
(:func:`continuity.metrics.compute.backup_checks`, :func:`~continuity.metrics.compute.pause_checks`,
:func:`~continuity.metrics.compute.standby_views`); the comparisons are those of the alert rules in
``ops/alerts/continuity.rules.yml`` with the same defaults (a test holds the rules and these defaults together), so
a webhook and Prometheus speak of the same facts. A set never snapshotted, a restore never verified and a standby
nothing current is published about are not judged here (their age is unknown): the rules and ``continuity status``
cover those.

Pure: typed inputs and the time in, conditions and notices out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from continuity.durations import format_duration
from continuity.metrics.compute import BackupCheck, PauseCheck, StandbyView
from continuity.notify.topics import BACKUP_STALE, PAUSE_OVERDUE, REPLICATION_LAG, Notice


@dataclass(frozen=True)
class Limits:
    """The thresholds of ``checks:`` in ``ops/notifications.yml`` (defaults: those of the alert rules)."""

    snapshot_schedules: float = 3.0
    verify_schedules: float = 3.0
    pause_without_expiry: float = 86400.0


@dataclass(frozen=True)
class Watch:
    """One reading of what the conditions are judged on; ``rpo``: service -> declared RPO (seconds)."""

    now: float
    backups: Sequence[BackupCheck] = ()
    pauses: Sequence[PauseCheck] = ()
    standbys: Sequence[StandbyView] = ()
    rpo: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Condition:
    """A condition that holds now. ``key`` names the episode's subject (topic and labels): while it keeps holding,
    it is the same episode."""

    key: str
    topic: str
    severity: str
    title: str
    text: str
    labels: dict[str, str]


@dataclass(frozen=True)
class Episode:
    """An episode open in Redis: when it began and the notice that announced it."""

    key: str
    since: float
    notice: Notice


def _key(topic: str, labels: Mapping[str, str]) -> str:
    return topic + "|" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _d(seconds: float | None) -> str:
    return "unknown" if seconds is None else format_duration(seconds)


def _condition(topic: str, severity: str, title: str, text: str, **labels: str) -> Condition:
    return Condition(_key(topic, labels), topic, severity, title, text, dict(labels))


def backup_stale(b: BackupCheck, limits: Limits) -> list[Condition]:
    out = []
    age = b.snapshot_age
    if b.rpo is not None:
        late = b.rpo_met is False
        bound = f"its RPO {_d(b.rpo)}"
    else:
        late = age is not None and b.schedule is not None and age > limits.snapshot_schedules * b.schedule
        bound = f"{limits.snapshot_schedules:g}x its {_d(b.schedule)} schedule"
    if late:
        out.append(_condition(BACKUP_STALE, "critical" if b.rpo is not None else "warning",
                              f"backup set {b.set} is stale",
                              f"Its last snapshot is {_d(age)} old, beyond {bound}: data written since would be lost "
                              "with its node. Check `continuity report` and `continuity pulse tail --kind "
                              "backup.snapshot_failed`.", set=b.set, check="snapshot"))
    if (b.verified_age is not None and b.verify_schedule is not None
            and b.verified_age > limits.verify_schedules * b.verify_schedule):
        out.append(_condition(BACKUP_STALE, "warning", f"no verified restore of {b.set}",
                              f"The last restore drill that passed was {_d(b.verified_age)} ago, beyond "
                              f"{limits.verify_schedules:g}x its {_d(b.verify_schedule)} restore-drill schedule: "
                              "a backup is only as good as its last restore.", set=b.set, check="restore"))
    return out


def pause_overdue(p: PauseCheck, now: float, limits: Limits) -> Condition | None:
    if p.expired:
        text = (f"It ran past its declared end ({_d(max(0.0, now - p.until))} ago) and no longer blocks failover, "
                "but nobody resumed it: was the maintenance finished? `continuity failover resume` clears it."
                if p.until is not None else "It ran past its declared end.")
    elif p.until is None and p.started is not None and now - p.started > limits.pause_without_expiry:
        text = (f"Paused {_d(now - p.started)} ago with no declared end: the service has no automatic failover. "
                "Resume it, or pause again with `--for`.")
    else:
        return None
    return _condition(PAUSE_OVERDUE, "warning", f"failover pause of {p.scope} is overdue", text, scope=p.scope)


def lag_over_rpo(s: StandbyView, rpo: float | None) -> Condition | None:
    if s.lag_seconds is None or rpo is None or s.lag_seconds <= rpo:
        return None
    return _condition(REPLICATION_LAG, "critical", f"standby {s.node} of {s.service} lags beyond its RPO",
                      f"Its copy is {_d(s.lag_seconds)} behind (RPO {_d(rpo)}, state {s.state}): a failover to it now "
                      "would lose more than the service may. `continuity status` shows each source.",
                      service=s.service, node=s.node)


def evaluate(w: Watch, limits: Limits) -> dict[str, Condition]:
    """Every condition that holds in ``w``, by key."""
    found: list[Condition | None] = []
    for b in w.backups:
        found += backup_stale(b, limits)
    found += [pause_overdue(p, w.now, limits) for p in w.pauses]
    found += [lag_over_rpo(s, w.rpo.get(s.service)) for s in w.standbys]
    return {c.key: c for c in found if c is not None}


def episode_id(key: str, since: float) -> str:
    return f"{key}@{since:.3f}"


def opened(c: Condition, now: float) -> Notice:
    """The notice an episode begins with."""
    eid = episode_id(c.key, now)
    return Notice(c.topic, c.severity, c.title, c.text, eid, now, c.topic, dict(c.labels), False, eid, now)


def closed(e: Episode, now: float) -> Notice:
    """The ``resolved`` notice of an episode that ended at ``now``."""
    n = e.notice
    return Notice(n.topic, "info", f"resolved: {n.title}", f"Cleared after {_d(max(0.0, now - e.since))}.",
                  f"{n.episode}/resolved", now, n.topic, dict(n.labels), True, n.episode, e.since)


def changes(open_: Mapping[str, Episode], current: Mapping[str, Condition],
            now: float) -> tuple[list[tuple[str, Notice]], list[tuple[Episode, Notice]]]:
    """(episodes to open: key and first notice; episodes to close, with their resolved notice)."""
    begin = [(key, opened(c, now)) for key, c in sorted(current.items()) if key not in open_]
    end = [(e, closed(e, now)) for key, e in sorted(open_.items()) if key not in current]
    return begin, end


def episode_body(n: Notice) -> dict[str, Any]:
    """What Redis keeps of an open episode (:mod:`continuity.state.notifications`)."""
    return {"since": n.since, "notice": n.as_dict()}


def episode_of(key: str, body: Mapping[str, Any]) -> Episode | None:
    try:
        notice = Notice.from_dict(body["notice"])
        return Episode(key, float(body["since"]), notice)
    except (KeyError, TypeError, ValueError):
        return None
