"""One pipelined read of what ``continuity status`` shows: registry, last-seen, detector states, queue depths,
mode, and every service's route, epoch and lease, as raw values (parsed by each concept's own parser).

Operation: :func:`read_snapshot` — one round trip, not a transaction: each value is as fresh as its own write;
the status report says so by showing ages, never by claiming a consistent cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from continuity.state import keys


@dataclass(frozen=True)
class RedisSnapshot:
    registry: dict[str, str]
    seen: dict[str, str]
    detector: dict[str, str]
    queue_depth: dict[str, int]
    mode: str | None
    routes: dict[str, str | None]
    epochs: dict[str, str | None]
    leases: dict[str, str | None]
    config_errors: dict[str, str] = field(default_factory=dict)  # ``config:errors`` as read
    detector_meta: str | None = None  # ``detector:meta`` (when the detector last swept)


def read_snapshot(client: Any, services: Iterable[str], queues: Mapping[str, str]) -> RedisSnapshot:
    """``queues``: node -> queue name (whose length is the node's backlog)."""
    services = sorted(services)
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.nodes_registry())
        pipe.hgetall(keys.nodes_seen())
        pipe.hgetall(keys.node_state())
        for q in queues.values():
            pipe.llen(q)
        pipe.get(keys.mode())
        for s in services:
            pipe.get(keys.route(s))
        for s in services:
            pipe.get(keys.epoch(s))
        for s in services:
            pipe.get(keys.lease(s))
        pipe.hgetall(keys.config_errors())
        pipe.get(keys.detector_meta())
        res = pipe.execute()
    n = len(queues)
    m = len(services)
    depths = dict(zip(queues.keys(), res[3:3 + n], strict=True))
    rest = res[3 + n:]
    mode = rest[0]
    routes = dict(zip(services, rest[1:1 + m], strict=True))
    epochs = dict(zip(services, rest[1 + m:1 + 2 * m], strict=True))
    leases = dict(zip(services, rest[1 + 2 * m:1 + 3 * m], strict=True))
    return RedisSnapshot(res[0], res[1], res[2], depths, mode, routes, epochs, leases, dict(rest[1 + 3 * m]),
                         rest[2 + 3 * m])
