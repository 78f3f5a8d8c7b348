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

from continuity import paths
from continuity.backup.config import load_fleet_backup_config
from continuity.backup.shipper import concerns
from continuity.blueprint import load_blueprint
from workers.app import app
from workers.supervised import SupervisedChildStep

log = logging.getLogger("continuity.backup.shipper")


def wanted(node: str) -> bool:
    if not os.path.exists(paths.backup_config_path()):
        return False
    cfg = load_fleet_backup_config(paths.backup_config_path(), root=paths.root())
    bp = load_blueprint(paths.blueprint_path())
    return concerns(cfg, node, {s: (v.primary, *v.standbys) for s, v in bp.services.items()})


class ShipperStep(SupervisedChildStep):
    """Runs ``python -m continuity.backup.shipper --node $CONTINUITY_NODE`` beside the worker."""

    what = "log shipper"
    log = log

    def argv(self, node: str) -> list[str] | None:
        if not wanted(node):
            return None
        return [sys.executable, "-m", "continuity.backup.shipper", "--node", node, "--parent", str(os.getpid())]


app.steps["worker"].add(ShipperStep)
