"""The beat schedule, built from ops/ config rather than written by hand.

One entry per node x job, each routed to that node's own queue and each with
``expires``: a satellite that comes back from a blackout must not chew through
a backlog of stale snapshot and ping jobs. Areas that schedule work (backups,
verifies, drills, the failover watchdog) contribute entries through a
``beat_entries`` function in their workers module, so adding a node to the
blueprint is all it takes to schedule its jobs. The failure detector is not
among them: it is a loop in every control worker (``workers/control.py``), so
it keeps sweeping while beat is down or restarting.
"""

from __future__ import annotations

import importlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from continuity import paths, settings
from continuity.blueprint import Blueprint, load_blueprint

log = logging.getLogger(__name__)

# A new interval entry's first run is due at once (celery would otherwise wait one interval);
# an entry already in Redis keeps its recorded last run, so restarts do not re-run it.
NEVER_RUN = datetime(2000, 1, 1, tzinfo=UTC)


def ping_entries(bp: Blueprint, interval: float | None = None) -> dict[str, dict[str, Any]]:
    """A liveness job per node: proves beat → node queue → that node's worker, end to end.

    ``interval`` defaults to $CONTINUITY_PING_INTERVAL, read now rather than at import so a beat
    started with a new value (or a test that sets one) gets it."""
    if interval is None:
        interval = settings.PING_INTERVAL.get()
    out: dict[str, dict[str, Any]] = {}
    for node in sorted(bp.nodes):
        out[f"continuity.node.ping:{node}"] = {
            "task": "continuity.node.ping",
            "schedule": timedelta(seconds=interval),
            "args": [node],
            "kwargs": {"due": None},
            "options": {"queue": bp.queue(node), "routing_key": bp.queue(node), "expires": interval},
        }
    return out


CONTRIBUTORS = ("workers.backup", "workers.drills", "workers.failover")


def build_schedule(bp: Blueprint | None = None) -> dict[str, dict[str, Any]]:
    """The whole schedule; every entry is checked to carry a queue and an ``expires``."""
    bp = bp or load_blueprint(paths.blueprint_path())
    schedule = ping_entries(bp)
    for module_name in CONTRIBUTORS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name != module_name:
                raise
            continue
        entries_fn = getattr(module, "beat_entries", None)
        if entries_fn is None:
            continue
        schedule.update(entries_fn(bp))
    for name, entry in schedule.items():
        if isinstance(entry.get("schedule"), timedelta | int | float):
            entry.setdefault("last_run_at", NEVER_RUN)  # calendar entries wait for their slot
        opts = entry.setdefault("options", {})
        if not opts.get("queue"):
            raise ValueError(f"beat entry {name} has no queue")
        if not opts.get("expires"):
            raise ValueError(f"beat entry {name} has no expires")
    return schedule
