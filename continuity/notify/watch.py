"""One read of the fleet for the watched conditions: :func:`read_watch`.

Through the readers ``continuity status``, ``continuity report`` and the metrics use (the status report for the
pauses and each service's primary, the published replication lags, the backup sets' status and schedules), folded
by the metrics' own functions, so a notification says what a scrape at the same moment shows. A handful of round
trips; nothing here is proportional to history.
"""

from __future__ import annotations

from typing import Any

from continuity import report
from continuity.blueprint import Blueprint
from continuity.metrics.compute import backup_checks, pause_checks, standby_views
from continuity.metrics.read import read_schedules
from continuity.notify.conditions import Watch
from continuity.status import build_report, read_replication, read_snapshot


def read_watch(client: Any, bp: Blueprint, now: float) -> Watch:
    sets = report.read_backup_sets()
    repl = read_replication(client, bp)
    status = build_report(bp, read_snapshot(client, bp), now, repl)
    standbys = [sb for sv in status["services"] if sv["id"] in bp.services
                for sb in standby_views(bp, sv["id"], sv.get("primary"), repl, now)]
    return Watch(now, backup_checks(sets, report.read_backup_status(client, sets), read_schedules(), now),
                 pause_checks(status.get("pauses") or {}), standbys,
                 {sid: float(view.rpo) for sid, view in bp.services.items()})
