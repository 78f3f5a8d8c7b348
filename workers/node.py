"""Tasks every node runs on its own queue, and the worker's registration in Redis.

``continuity.node.ping`` is the smallest scheduled job: it proves, end to end,
that beat put work on the node's own queue and that node (and no other) ran it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from celery import signals

from continuity import keys, pulse
from continuity.events import NODE_PING, NODE_REGISTERED
from continuity.redisd import connect
from workers.app import app


def node_id() -> str | None:
    return os.environ.get("CONTINUITY_NODE") or None


def _mark_seen(client: Any, node: str, now: float) -> None:
    client.hset(keys.nodes_seen(), node, f"{now:.3f}")


@signals.worker_ready.connect
def register_node(sender: Any = None, **_: Any) -> None:
    """Announce this node (hostname, pid, queue) so `status` and the detector know it exists."""
    node = node_id()
    if not node:
        return
    client = connect()
    now = time.time()
    info = {"node": node, "hostname": socket.gethostname(), "pid": os.getpid(), "started": now,
            "queue": os.environ.get("CONTINUITY_QUEUE", f"node.{node}"),
            "worker": getattr(sender, "hostname", None)}
    client.hset(keys.nodes_registry(), node, json.dumps(info))
    _mark_seen(client, node, now)
    pulse.emit(NODE_REGISTERED, node=node, data=info)


@app.task(name="continuity.node.ping", bind=True, time_limit=30, soft_time_limit=25, acks_late=True)
def ping(self: Any, target: str, due: float | None = None) -> dict[str, Any]:
    """Scheduled liveness job: record which node ran it; complain if it ran on the wrong node."""
    node = node_id()
    now = time.time()
    client = connect()
    _mark_seen(client, node or "?", now)
    correct = node == target
    pulse.emit(NODE_PING, node=node, data={"target": target, "correct": correct, "due": due,
                                             "task_id": self.request.id, "lag": (now - due) if due else None})
    return {"node": node, "target": target, "correct": correct, "ran_at": now}
