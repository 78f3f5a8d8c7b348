"""Operator controls in Redis: maintenance pauses and failover cool-downs.

``failover:pause:<service>`` (``*all*`` for the whole fleet) is a JSON note {service, who, at, reason} that an
operator sets and clears; it has no TTL because a forgotten pause must stay visible. ``failover:cooldown:<service>``
holds the unix time a service's cool-down ends and expires at that moment: it is a guard, not history (the
failover record is the history).

Operations and their guarantees:

- :func:`read` — every pause flag and cool-down of the given services in one pipelined round trip.
- :func:`set_pause` / :func:`clear_pause` — one ``SET`` / ``DEL``; clearing says whether a pause was there.
- :func:`read_pauses` — who paused what, when and why (unreadable notes kept as ``{"raw": ...}``).
- :func:`set_cooldown` — ``SET PX``: the guard disappears by itself when the cool-down ends;
  :func:`claim_cooldown` — ``SET NX PX``: exactly one of two racing launchers claims a service.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from continuity.state import keys
from continuity.state.values import object_or_raw

GLOBAL = "*"


@dataclass(frozen=True)
class Controls:
    """What the planner must respect: paused services, a fleet-wide pause, cool-down end time per service."""

    paused: frozenset[str] = frozenset()
    global_pause: bool = False
    cooldowns: dict[str, float] = field(default_factory=dict)

    def as_tuple(self) -> tuple[set[str], bool, dict[str, float]]:
        return set(self.paused), self.global_pause, dict(self.cooldowns)


def read(client: Any, services: Iterable[str]) -> Controls:
    names = sorted(services)
    with client.pipeline(transaction=False) as pipe:
        pipe.exists(keys.failover_pause())
        for s in names:
            pipe.exists(keys.failover_pause(s))
        for s in names:
            pipe.get(keys.failover_cooldown(s))
        res = pipe.execute()
    paused = frozenset(s for s, p in zip(names, res[1:1 + len(names)], strict=True) if p)
    cooldowns: dict[str, float] = {}
    for s, raw in zip(names, res[1 + len(names):], strict=True):
        if raw:
            try:
                cooldowns[s] = float(raw)
            except ValueError:
                continue
    return Controls(paused=paused, global_pause=bool(res[0]), cooldowns=cooldowns)


def set_cooldown(client: Any, service: str, until: float, now: float) -> None:
    client.set(keys.failover_cooldown(service), f"{until:.3f}", px=max(1, int((until - now) * 1000)))


def set_pause(client: Any, service: str | None, body: dict[str, Any]) -> None:
    client.set(keys.failover_pause(service), json.dumps(body))


def clear_pause(client: Any, service: str | None) -> bool:
    return bool(client.delete(keys.failover_pause(service)))


def read_pauses(client: Any, services: Iterable[str]) -> dict[str, dict[str, Any]]:
    """scope (:data:`GLOBAL` for the fleet, else the service) -> who/when/why."""
    scopes: list[tuple[str, str | None]] = [(GLOBAL, None)] + [(s, s) for s in sorted(services)]
    with client.pipeline(transaction=False) as pipe:
        for _, svc in scopes:
            pipe.get(keys.failover_pause(svc))
        res = pipe.execute()
    out: dict[str, dict[str, Any]] = {}
    for (scope, _), raw in zip(scopes, res, strict=True):
        if raw:
            out[scope] = object_or_raw(raw)
    return out


def claim_cooldown(client: Any, service: str, until: float, seconds: float, force: bool = False) -> bool:
    """Start a cool-down unless one runs (``SET NX PX``): of two launchers racing for one service, exactly one
    claims it and fails over; ``force`` (an operator's action) overrides a running cool-down and restarts it."""
    return bool(client.set(keys.failover_cooldown(service), f"{until:.3f}", px=max(1, int(seconds * 1000)),
                           nx=not force))
