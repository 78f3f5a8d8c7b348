"""The node's replicator as a worker bootstep: started with the worker, stopped with it, restarted if it dies.

All logic is in :mod:`continuity.replication` (the replicator, a process of its own) and
:mod:`continuity.replication.supervisor`; this only ties it to the worker's lifecycle, like the agent
(``workers/agent.py``).
"""

from __future__ import annotations

import logging
import os
import sys

from continuity import paths, settings
from continuity.blueprint import load_blueprint
from continuity.replication.context import replicated
from workers.app import app
from workers.supervised import SupervisedChildStep

log = logging.getLogger("continuity.replication")


def wanted(node: str) -> bool:
    """Is there anything for this node to replicate (a replicated service it is placed on)?"""
    bp = load_blueprint(paths.blueprint_path())
    return any(replicated(bp, s) and node in (v.primary, *v.standbys) for s, v in bp.services.items())


class ReplicatorStep(SupervisedChildStep):
    """Runs ``python -m continuity.replication --node $CONTINUITY_NODE`` beside the worker."""

    what = "replicator"
    log = log

    def argv(self, node: str) -> list[str] | None:
        if not settings.REPLICATION.get() or not wanted(node):
            return None
        return [sys.executable, "-m", "continuity.replication", "--node", node, "--parent", str(os.getpid())]


app.steps["worker"].add(ReplicatorStep)
