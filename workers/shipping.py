"""The node's log shipper as a worker bootstep: started with the worker, stopped with it, restarted if it dies.

All logic is in :mod:`continuity.backup.shipper` (a process of its own, so shipping never competes with the
node agent for the GIL); this only ties it to the worker's lifecycle, like the replicator
(``workers/replication.py``). It starts only on a node that could ship: a shipping set's node, or one placed
for a service such a set protects.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import bootsteps

from continuity import paths, settings
from continuity.backup.config import load_fleet_backup_config
from continuity.backup.shipper import concerns
from continuity.blueprint import load_blueprint
from continuity.replication.supervisor import Supervisor
from workers.app import app

log = logging.getLogger("continuity.backup.shipper")


def wanted(node: str) -> bool:
    if not os.path.exists(paths.backup_config_path()):
        return False
    cfg = load_fleet_backup_config(paths.backup_config_path(), root=paths.root())
    bp = load_blueprint(paths.blueprint_path())
    return concerns(cfg, node, {s: (v.primary, *v.standbys) for s, v in bp.services.items()})


class ShipperStep(bootsteps.StartStopStep):
    """Runs ``python -m continuity.backup.shipper --node $CONTINUITY_NODE`` beside the worker."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.supervisor: Supervisor | None = None

    def start(self, worker: Any) -> None:
        node = settings.NODE.get()
        if not node:
            return
        try:
            if not wanted(node):
                return
            argv = [sys.executable, "-m", "continuity.backup.shipper", "--node", node, "--parent", str(os.getpid())]
            self.supervisor = Supervisor(node, argv=argv).start()
        except Exception:  # noqa: BLE001 - a worker without a shipper is visible (no log shipped), not fatal
            log.exception("log shipper for %s could not start", node)
            return
        log.info("log shipper for %s started", node)

    def stop(self, worker: Any) -> None:
        sup, self.supervisor = self.supervisor, None
        if sup is not None:
            sup.stop()

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)


app.steps["worker"].add(ShipperStep)
