"""The node registry, last-seen times and the detector's classification of each node, as Redis holds them.

``nodes`` (hash node -> JSON {node, hostname, pid, started, queue, worker}) is written by a worker when it starts;
``nodes:seen`` (hash node -> unix time) by every heartbeat (the beat script) and every ping; ``detector:nodes``
(hash node -> classification JSON) only by the detector's sweep.

Operations and their guarantees:

- :func:`register` / :func:`mark_seen` — one ``HSET`` each; last writer wins (a node writes only its own field).
- :func:`read_registry` — the registration of one node, parsed; None when absent or unreadable.
- :func:`classifications` — the detector's classifications as they are.
- :func:`read_states` — the detector's view of every given node, with a last-seen fallback for nodes it has not
  classified (so an operator can act before the detector ever ran): a node seen within ``fresh`` seconds counts
  as alive. Two reads, not atomic together: a classification is never older than the sweep that wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from continuity.state import keys


def register(client: Any, node: str, info: dict[str, Any]) -> None:
    client.hset(keys.nodes_registry(), node, json.dumps(info))


def mark_seen(client: Any, node: str, now: float) -> None:
    client.hset(keys.nodes_seen(), node, f"{now:.3f}")


def read_registry(client: Any, node: str) -> dict[str, Any] | None:
    raw = client.hget(keys.nodes_registry(), node)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def classifications(client: Any) -> dict[str, dict[str, Any]]:
    """The detector's classification of each node it has classified (unreadable values as ``{"state": raw}``)."""
    out: dict[str, dict[str, Any]] = {}
    for node, raw in client.hgetall(keys.node_state()).items():
        try:
            value = json.loads(raw)
            out[node] = value if isinstance(value, dict) else {"state": str(value)}
        except ValueError:
            out[node] = {"state": raw}
    return out


def read_states(client: Any, nodes: Iterable[str], now: float, fresh: float) -> dict[str, dict[str, Any]]:
    detector = client.hgetall(keys.node_state())
    seen = client.hgetall(keys.nodes_seen())
    out: dict[str, dict[str, Any]] = {}
    for node in nodes:
        raw = detector.get(node)
        if raw:
            try:
                value = json.loads(raw)
                out[node] = value if isinstance(value, dict) else {"state": str(value)}
            except ValueError:
                out[node] = {"state": raw}
            continue
        last = seen.get(node)
        try:
            fresh_enough = last is not None and now - float(last) <= fresh
        except ValueError:
            fresh_enough = False
        if fresh_enough:
            out[node] = {"state": "alive", "source": "last-seen"}
        else:
            out[node] = {"state": "unknown" if last is None else "stale", "source": "last-seen"}
    return out
