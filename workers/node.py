"""Tasks every node runs on its own queue, and the worker's registration in Redis.

``continuity.node.ping`` is the smallest scheduled job: it proves, end to end,
that beat put work on the node's own queue and that node (and no other) ran it.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from celery import signals

from continuity import pulse, registrations, settings, task_auth
from continuity.events import NODE_PING, NODE_REGISTERED
from continuity.state import nodes
from workers.task import continuity_task, redis_client


def node_id() -> str | None:
    return settings.NODE.get()


def _queue(node: str) -> str:
    """The queue `continuity worker` told us we consume; else the blueprint's default name for it."""
    queue = settings.QUEUE.get()
    return f"node.{node}" if queue is None else queue


@signals.worker_ready.connect
def register_node(sender: Any = None, **_: Any) -> None:
    """Announce this node (hostname, pid, queue) so `status` and the detector know it exists; signed with the
    node's key, because drills signal the pid it names (:mod:`continuity.registrations`)."""
    node = node_id()
    if not node:
        return
    client = redis_client()
    now = time.time()
    info = {"node": node, "hostname": socket.gethostname(), "pid": os.getpid(), "started": now,
            "queue": _queue(node),
            "worker": getattr(sender, "hostname", None)}
    nodes.register(client, node, registrations.sign(task_auth.role_key(task_auth.NODE, node), info))
    nodes.mark_seen(client, node, now)
    pulse.emit(NODE_REGISTERED, node=node, data=info)


@continuity_task("continuity.node.ping", bind=True, time_limit=30)
def ping(self: Any, target: str, due: float | None = None, *, client: Any) -> dict[str, Any]:
    """Scheduled liveness job: record which node ran it; complain if it ran on the wrong node."""
    node = node_id()
    now = time.time()
    nodes.mark_seen(client, node or "?", now)
    correct = node == target
    pulse.emit(NODE_PING, node=node, data={"target": target, "correct": correct, "due": due,
                                             "task_id": self.request.id, "lag": (now - due) if due else None})
    return {"node": node, "target": target, "correct": correct, "ran_at": now}
