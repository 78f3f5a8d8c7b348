"""Routes, and the one rule for "who is the primary of this service now".

A route (``route:<service>``, JSON, no TTL) is what clients follow: the node and URL that serve the
service and the epoch it was published at. It is moved by the failover's repoint step and by a node agent
that bootstraps a service's first epoch, always *after* the lease moved: between promote and repoint the
lease already names the new primary while the route still names the old one.

That window is why every reader asks :func:`primary_of` instead of reading one key: a live lease is the
truth (its holder renews it and runs the service), then the latest route (the lease can lapse between two
renewals, or be gone with a Redis restart), then the blueprint's declared primary (a fleet that never
published anything). Status, ``failover status``, the planner, drills, backup forwarding and the sample
client all use it, so they cannot disagree mid-failover. Node names read from Redis are used only when the
blueprint declares them (a value anyone could write is not a target).

Operations and their guarantees:

- :func:`publish` — compare-and-set in one script: the key never moves back to an older epoch than the one
  it holds, and the same script publishes the route on ``routes`` (pub/sub) so subscribers see each change
  exactly when it is applied.
- :func:`read` / :func:`read_many` — plain reads (one ``MGET``), parsed by :func:`parse`, which never raises.
- :func:`primary_of` — pure; :func:`read_primaries` / :func:`read_primary` — leases and routes in one pipelined
  round trip, then :func:`primary_of` for each.
- :func:`serving_route` — the route only while it agrees with :func:`primary_of` (what a client may write to).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from continuity.state import keys, leases
from continuity.state.scripts import Script

Source = Literal["lease", "route", "blueprint"]


@dataclass(frozen=True)
class Route:
    service: str
    node: str
    epoch: int = 0
    url: str | None = None
    updated: float | None = None
    record: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Primary:
    """Who serves ``service`` now, at which epoch (None: never placed), and which key said so."""

    service: str
    node: str
    epoch: int | None
    source: Source


class Placement(Protocol):
    """What :func:`primary_of` needs of a blueprint: the declared nodes, and each service's declared primary."""

    @property
    def nodes(self) -> Mapping[str, Any]: ...

    @property
    def services(self) -> Mapping[str, Any]: ...


# KEYS[1]=route KEYS[2]=routes channel ; ARGV[1]=route JSON ARGV[2]=its epoch -> 1 applied | 0 a newer epoch holds
SET = Script("route.set", """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  if ok and type(obj) == 'table' and obj['epoch'] and tonumber(obj['epoch']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
""")


def parse(service: str, raw: Any) -> Route | None:
    """A route value; None when absent or unreadable. A bare node name (an old or hand-written value) is a
    route at epoch 0."""
    if not raw:
        return None
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        data = json.loads(text)
    except ValueError:
        return Route(service=service, node=text)
    if not isinstance(data, dict):
        return Route(service=service, node=str(data))
    node = data.get("node")
    if not node:
        return None
    try:
        epoch = int(data.get("epoch") or 0)
        updated = float(data["updated"]) if data.get("updated") is not None else None
    except (TypeError, ValueError):
        return None
    url = data.get("url")
    record = data.get("record")
    return Route(service=service, node=str(node), epoch=epoch, url=str(url) if url else None, updated=updated,
                 record=str(record) if record else None)


def encode(route: Route) -> str:
    return json.dumps(route.as_dict(), sort_keys=True)


def publish(client: Any, route: Route) -> bool:
    """Set and announce ``route`` unless the key already holds a newer epoch (then False, nothing changes)."""
    return bool(int(SET(client, keys=[keys.route(route.service), keys.routes_channel()],
                        args=[encode(route), int(route.epoch)])))


def read(client: Any, service: str) -> Route | None:
    return parse(service, client.get(keys.route(service)))


def read_many(client: Any, services: Iterable[str]) -> dict[str, Route]:
    names = list(services)
    values = client.mget([keys.route(s) for s in names]) if names else []
    out = {}
    for s, raw in zip(names, values, strict=True):
        route = parse(s, raw)
        if route is not None:
            out[s] = route
    return out


def primary_of(fleet: Placement, service: str, lease: Any | None, route: Route | None) -> Primary:
    """The rule (see the module docstring): a live lease, else the route, else the declared primary.

    ``lease`` is anything with ``node`` and ``epoch`` (a :class:`continuity.state.leases.Lease`).
    """
    nodes = fleet.nodes
    if lease is not None and getattr(lease, "node", None) and lease.node in nodes:
        return Primary(service, str(lease.node), int(lease.epoch), "lease")
    if route is not None and route.node in nodes:
        return Primary(service, route.node, int(route.epoch), "route")
    return Primary(service, str(fleet.services[service].primary), None, "blueprint")


def read_primaries(client: Any, fleet: Placement, services: Iterable[str] | None = None) -> dict[str, Primary]:
    """:func:`primary_of` for ``services`` (default: all), from one pipelined read of their leases and routes."""
    names = sorted(fleet.services) if services is None else list(services)
    pipe = client.pipeline(transaction=False)
    for s in names:
        leases.READ(client, keys=[keys.lease(s)], pipe=pipe)
    for s in names:
        pipe.get(keys.route(s))
    res = pipe.execute()
    n = len(names)
    return {s: primary_of(fleet, s, leases.parse(s, res[i]), parse(s, res[n + i])) for i, s in enumerate(names)}


def read_primary(client: Any, fleet: Placement, service: str) -> Primary:
    return read_primaries(client, fleet, [service])[service]


def serving_route(client: Any, service: str) -> Route | None:
    """The route, but only while it names the primary (:func:`primary_of`): None between promote and repoint,
    when the live lease already names another node, so a client waits for the new route instead of writing to
    a fenced node. One pipelined read of the lease and the route."""
    pipe = client.pipeline(transaction=False)
    leases.READ(client, keys=[keys.lease(service)], pipe=pipe)
    pipe.get(keys.route(service))
    raw_lease, raw_route = pipe.execute()
    lease, route = leases.parse(service, raw_lease), parse(service, raw_route)
    if route is None or (lease is not None and lease.node != route.node):
        return None
    return route
