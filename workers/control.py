"""The control plane's periodic task: ``continuity.control.sweep``, the failure detector's heartbeat.

Beat sends it every ``heartbeat_interval`` (1 s) to ``continuity.control``,
which every core node consumes, so detection survives the loss of any one node.
It expires after one interval (a sweep that waited is worthless: the next one
is already due) and is not late-acked (a lost sweep is replaced, not retried).
The whole sweep is :func:`continuity.detect.sweep.run_sweep`; this module only
caches what a process can keep between sweeps and injects the failover planner and launcher
(``continuity.detect`` never imports ``continuity.failover``: this shell wires them together).

A process that sweeps also runs the ingest loop (:class:`continuity.detect.sweep.IngestLoop`) on a
thread: it verifies arriving beats between sweeps so the sweep itself only decides. Several prefork
processes consume the control queue; ingest drains only in the process that made the last sweep (the
others' loops find their memory stale and do nothing), so no beat ends up in a memory nobody sweeps with.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from continuity import pulse
from continuity.blueprint import Blueprint
from continuity.detect.sweep import IngestLoop, SweepCache, run_sweep
from continuity.failover.planner import plan_failovers
from continuity.redisd import connect
from workers.app import CONTROL_QUEUE
from workers.failover import launch_failovers
from workers.task import blueprint, continuity_task

log = logging.getLogger("continuity.sweep")

SWEEP_TASK = "continuity.control.sweep"
SWEEP_REDIS = {"socket_timeout": 2, "socket_connect_timeout": 2}  # a sweep must not hang on a blipping Redis
_state: dict[str, Any] = {}


def current_blueprint() -> Blueprint:
    """Re-read only when the file changed: an edited blueprint takes effect at the next sweep."""
    return blueprint()


@continuity_task(SWEEP_TASK, time_limit=10, soft_time_limit=8, acks_late=False, ignore_result=True,
                 redis=SWEEP_REDIS)
def sweep(*, client: Any, bp: Blueprint) -> dict[str, Any]:
    """One detector step: classify nodes, publish states and mode, hand newly dead nodes to failover."""
    cache = _state.setdefault("cache", SweepCache())
    _ensure_ingest(cache, bp)
    return run_sweep(client, bp, cache=cache, pulse=pulse.default(), launch=launch_failovers,
                     plan=plan_failovers).summary()


def _ensure_ingest(cache: SweepCache, bp: Blueprint) -> None:
    """Start this process's ingest thread once (again after a fork: threads do not survive one)."""
    loop = _state.get("ingest")
    if loop is not None and loop.alive() and _state.get("ingest_pid") == os.getpid():
        return
    client = connect(**SWEEP_REDIS)  # its own connection: the ingest thread runs beside the sweeps
    _state["ingest"] = IngestLoop(client, current_blueprint, cache, IngestLoop.interval_for(bp)).start()
    _state["ingest_pid"] = os.getpid()


def beat_entries(bp: Blueprint) -> dict[str, dict[str, Any]]:
    """The sweep's beat entry (collected by beat_schedule.build_schedule)."""
    interval = bp.policy.heartbeat_interval
    return {
        SWEEP_TASK: {
            "task": SWEEP_TASK,
            "schedule": timedelta(seconds=interval),
            "options": {"queue": CONTROL_QUEUE, "routing_key": CONTROL_QUEUE, "expires": interval},
        }
    }
