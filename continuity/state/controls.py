"""Operator controls in Redis: maintenance pauses and failover cool-downs.

``failover:pause:<service>`` (``*all*`` for the whole fleet) is a JSON note {service, who, at, reason, until} that
an operator sets and clears; it has no TTL because a forgotten pause must stay visible. ``until`` (optional, unix
time) is the expiry the operator declared: past it the pause no longer blocks failover, but the note stays, shown
as expired (and alerted on) until someone resumes, so a maintenance window that ran over is noticed rather than
silently ended or silently kept. ``failover:cooldown:<service>`` holds the unix time a service's cool-down ends and
expires at that moment: it is a guard, not history (the failover record is the history).

Operations and their guarantees:

- :func:`read` — every pause in force and cool-down of the given services in one pipelined round trip (a pause
  past its ``until`` is not in force; an unreadable note is, so a garbled value never lifts a pause, unless the
  caller's ``honour`` refuses it: failover honours only operator-signed notes, :mod:`continuity.pause_auth`).
- :func:`set_pause` / :func:`clear_pause` — one ``SET`` / ``DEL``; clearing says whether a pause was there.
- :func:`set_resume` / :func:`read_resumes` — ``failover:resume:<scope>``, the operator-signed statement naming the
  pause note a ``failover resume`` ended (:mod:`continuity.pause_auth`: a bare ``DEL`` of a note is not a resume).
- :func:`read_pauses` — who paused what, when, why and until when, with ``expired`` (in force or not) worked out
  (unreadable notes kept as ``{"raw": ...}``, in force).
- :func:`set_cooldown` — ``SET PX``: the guard disappears by itself when the cool-down ends;
  :func:`claim_cooldown` — ``SET NX PX``: exactly one of two racing launchers claims a service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
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


def pause_until(body: Mapping[str, Any]) -> float | None:
    """The declared expiry of a pause note (None: until resumed, or not readable as a time)."""
    try:
        value = body.get("until")
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def pause_in_force(raw: Any, now: float) -> bool:
    """A pause key's value blocks failover unless it declares an expiry that has passed."""
    if not raw:
        return False
    until = pause_until(object_or_raw(raw))
    return until is None or now < until


Honour = Callable[[dict[str, Any], str | None], bool]  # (pause note, scope: service or None) -> counts?


def read(client: Any, services: Iterable[str], now: float | None = None, honour: Honour | None = None) -> Controls:
    """``now`` (default: the wall clock) decides which declared pause expiries have passed; ``honour`` (when
    given) which pause notes count at all (failover: only operator-signed ones, :mod:`continuity.pause_auth`)."""
    now = time.time() if now is None else now

    def counts(raw: Any, scope: str | None) -> bool:
        return pause_in_force(raw, now) and (honour is None or honour(object_or_raw(raw), scope))

    names = sorted(services)
    with client.pipeline(transaction=False) as pipe:
        pipe.get(keys.failover_pause())
        for s in names:
            pipe.get(keys.failover_pause(s))
        for s in names:
            pipe.get(keys.failover_cooldown(s))
        res = pipe.execute()
    paused = frozenset(s for s, p in zip(names, res[1:1 + len(names)], strict=True) if counts(p, s))
    cooldowns: dict[str, float] = {}
    for s, raw in zip(names, res[1 + len(names):], strict=True):
        if raw:
            try:
                cooldowns[s] = float(raw)
            except ValueError:
                continue
    return Controls(paused=paused, global_pause=counts(res[0], None), cooldowns=cooldowns)


def set_cooldown(client: Any, service: str, until: float, now: float) -> None:
    client.set(keys.failover_cooldown(service), f"{until:.3f}", px=max(1, int((until - now) * 1000)))


def set_pause(client: Any, service: str | None, body: dict[str, Any]) -> None:
    client.set(keys.failover_pause(service), json.dumps(body))


def clear_pause(client: Any, service: str | None) -> bool:
    return bool(client.delete(keys.failover_pause(service)))


def set_resume(client: Any, service: str | None, statement: dict[str, Any]) -> None:
    """The signed statement that ends a pause (kept until the next resume of that scope overwrites it)."""
    client.set(keys.failover_resume(service), json.dumps(statement))


def read_resumes(client: Any, scopes: Iterable[str]) -> dict[str, Any]:
    """scope (:data:`GLOBAL` for the fleet) -> its resume statement (parsed; None when absent or unreadable)."""
    names = list(scopes)
    with client.pipeline(transaction=False) as pipe:
        for scope in names:
            pipe.get(keys.failover_resume(None if scope == GLOBAL else scope))
        res = pipe.execute()
    out: dict[str, Any] = {}
    for scope, raw in zip(names, res, strict=True):
        try:
            out[scope] = json.loads(raw) if raw else None
        except ValueError:
            out[scope] = None
    return out


def read_pause(client: Any, service: str | None) -> dict[str, Any] | None:
    """The pause note of one scope, parsed (None when absent or not a JSON object)."""
    raw = client.get(keys.failover_pause(service))
    try:
        note = json.loads(raw) if raw else None
    except ValueError:
        return None
    return note if isinstance(note, dict) else None


def read_pauses(client: Any, services: Iterable[str], now: float | None = None) -> dict[str, dict[str, Any]]:
    """scope (:data:`GLOBAL` for the fleet, else the service) -> who/when/why/until, and ``expired``."""
    now = time.time() if now is None else now
    scopes: list[tuple[str, str | None]] = [(GLOBAL, None)] + [(s, s) for s in sorted(services)]
    with client.pipeline(transaction=False) as pipe:
        for _, svc in scopes:
            pipe.get(keys.failover_pause(svc))
        res = pipe.execute()
    out: dict[str, dict[str, Any]] = {}
    for (scope, _), raw in zip(scopes, res, strict=True):
        if raw:
            out[scope] = {**object_or_raw(raw), "expired": not pause_in_force(raw, now)}
    return out


def claim_cooldown(client: Any, service: str, until: float, seconds: float, force: bool = False) -> bool:
    """Start a cool-down unless one runs (``SET NX PX``): of two launchers racing for one service, exactly one
    claims it and fails over; ``force`` (an operator's action) overrides a running cool-down and restarts it."""
    return bool(client.set(keys.failover_cooldown(service), f"{until:.3f}", px=max(1, int(seconds * 1000)),
                           nx=not force))
