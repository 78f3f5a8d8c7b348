"""A worker bootstep that runs one child process of the node beside the worker, restarted if it dies.

The replicator and the log shipper are such children: each is a process of its own (so its work never
competes with the node agent for the interpreter lock), started with the worker, stopped with it, and
watched by a :class:`~continuity.replication.supervisor.Supervisor`. What differs is only whether the node
needs one and what runs, so a step says that in :meth:`SupervisedChildStep.argv` and nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from continuity import settings
from continuity.replication.supervisor import Supervisor


class SupervisedChildStep(bootsteps.StartStopStep):
    """Runs :meth:`argv` for ``$CONTINUITY_NODE`` under a supervisor; a node that needs none runs nothing."""

    requires = {"celery.worker.components:Pool"}
    what = "child process"  # for the log lines: "replicator", "log shipper"
    log = logging.getLogger("continuity")

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.supervisor: Supervisor | None = None

    def argv(self, node: str) -> list[str] | None:
        """What to run on ``node``, or None when it has nothing to do there."""
        raise NotImplementedError

    def start(self, worker: Any) -> None:
        node = settings.NODE.get()
        if not node:
            return
        try:
            argv = self.argv(node)
            if argv is None:
                return
            self.supervisor = Supervisor(node, argv=argv).start()
        except Exception:  # noqa: BLE001 - a worker without its child is visible (nothing published), not fatal
            self.log.exception("%s for %s could not start", self.what, node)
            return
        self.log.info("%s for %s started", self.what, node)

    def stop(self, worker: Any) -> None:
        sup, self.supervisor = self.supervisor, None
        if sup is not None:
            sup.stop()

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)
