"""The node's replicator as a worker bootstep: started with the worker, stopped with it, restarted if it dies.

All logic is in :mod:`continuity.replication` (the replicator, a process of its own) and
:mod:`continuity.replication.supervisor`; this only ties it to the worker's lifecycle, like the agent
(``workers/agent.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from continuity import paths, settings
from continuity.blueprint import load_blueprint
from continuity.replication.context import replicated
from continuity.replication.supervisor import Supervisor
from workers.app import app

log = logging.getLogger("continuity.replication")


def wanted(node: str) -> bool:
    """Is there anything for this node to replicate (a replicated service it is placed on)?"""
    bp = load_blueprint(paths.blueprint_path())
    return any(replicated(bp, s) and node in (v.primary, *v.standbys) for s, v in bp.services.items())


class ReplicatorStep(bootsteps.StartStopStep):
    """Runs ``python -m continuity.replication --node $CONTINUITY_NODE`` beside the worker."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.supervisor: Supervisor | None = None

    def start(self, worker: Any) -> None:
        node = settings.NODE.get()
        if not node or not settings.REPLICATION.get():
            return
        try:
            if not wanted(node):
                return
            self.supervisor = Supervisor(node).start()
        except Exception:  # noqa: BLE001 - a worker without a replicator is visible (no lag published), not fatal
            log.exception("replicator for %s could not start", node)
            return
        log.info("replicator for %s started", node)

    def stop(self, worker: Any) -> None:
        sup, self.supervisor = self.supervisor, None
        if sup is not None:
            sup.stop()

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)


app.steps["worker"].add(ReplicatorStep)
