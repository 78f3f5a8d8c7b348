"""One read of the fleet's state into a :class:`~continuity.metrics.compute.Reading`.

Everything goes through the readers other commands use: the status report (:mod:`continuity.status`), the
scorecard's readers (:mod:`continuity.report`), and the ``continuity.state`` modules that own each key. A few
round trips per scrape, none of them proportional to time (the pulse stream is never walked: its counters are
read instead); the failover and drill histories are read as two small fields per record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from continuity import paths, report
from continuity.blueprint import Blueprint
from continuity.config import load_document
from continuity.durations import parse_duration
from continuity.errors import ContinuityError
from continuity.metrics.compute import BackupSchedule, FailoverTally, NotifyTally, Reading
from continuity.state import drills as drill_state
from continuity.state import failover_records, incidents, notifications, pulse_stream
from continuity.status import build_report, read_replication, read_snapshot

# drills_total counts over the newest this many drill records (drills are rare: years of weekly game days)
DRILL_RECORDS = 5000


def _interval(value: Any) -> float | None:
    """Seconds of an interval schedule (``5m``); None for a cron line or anything unreadable."""
    try:
        return parse_duration(value) if value is not None else None
    except ValueError:
        return None


def read_schedules(path: Path | None = None) -> dict[str, BackupSchedule]:
    """Set -> declared snapshot and restore-drill intervals, read defensively (a broken file: none)."""
    try:
        doc = load_document(path or paths.backup_config_path())
    except ContinuityError:
        return {}
    sets = doc.data.get("sets") if isinstance(doc.data, dict) else None
    out: dict[str, BackupSchedule] = {}
    for set_id, body in (sets or {}).items():
        if not isinstance(body, dict):
            continue
        verify = body.get("verify")
        out[str(set_id)] = BackupSchedule(_interval(body.get("schedule", "1h")),
                                          _interval(verify.get("schedule", "1h")) if isinstance(verify, dict)
                                          else None)
    return out


def read_failovers(client: Any) -> FailoverTally:
    """Counts over every record; for each service the newest start, MTTR and detection.

    The MTTR needs a record's steps, so the newest succeeded record of each service is read whole (one more
    round trip per service that ever failed over), parsed by the records' one parser."""
    counts: dict[tuple[str, str, str], int] = {}
    running = 0
    last_started: dict[str, float] = {}
    last_detection: dict[str, float] = {}
    newest_success: dict[str, str] = {}
    for o in failover_records.outcomes(client):
        last_started.setdefault(o.service, o.started)
        if o.outcome == failover_records.RUNNING:
            running += 1
            continue
        counts[(o.service, o.kind, o.outcome)] = counts.get((o.service, o.kind, o.outcome), 0) + 1
        if o.detection is not None:
            last_detection.setdefault(o.service, o.detection)
        if o.outcome == "succeeded":
            newest_success.setdefault(o.service, o.id)
    last_mttr: dict[str, float] = {}
    for service, rid in newest_success.items():
        raw = failover_records.read(client, rid)
        mttr = failover_records.assemble(raw.fields).get("mttr") if raw is not None else None
        if mttr is not None:
            last_mttr[service] = float(mttr)
    return FailoverTally(counts, running, last_started, last_mttr, last_detection)


def read_notify(client: Any, webhooks: Iterable[str]) -> dict[str, NotifyTally]:
    stats = notifications.stats(client)
    pending = notifications.pending_by_webhook(client)
    return {w: NotifyTally(pending.get(w, 0), stats.get((w, "delivered"), 0), stats.get((w, "given_up"), 0))
            for w in webhooks}


def read(client: Any, bp: Blueprint, webhooks: Iterable[str] = (), clock: Callable[[], float] = time.time,
         timer: Callable[[], float] = time.monotonic) -> Reading:
    """Everything the metrics show, read now (raises the client's error when Redis cannot be read)."""
    started = timer()
    now = clock()
    sets = report.read_backup_sets()
    repl = read_replication(client, bp)
    status = build_report(bp, read_snapshot(client, bp), now, repl)
    return Reading(
        now=now, status=status, backup_sets=sets, backup_status=report.read_backup_status(client, sets),
        schedules=read_schedules(), drills=report.read_drills(client, DRILL_RECORDS),
        failovers=read_failovers(client), incidents=len(incidents.ids(client)),
        pulse_counts=pulse_stream.counts(client), drill_running=drill_state.lock_holder(client) is not None,
        notify=read_notify(client, webhooks), replication=repl, read_seconds=max(0.0, timer() - started))
