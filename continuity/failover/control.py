"""Operator-facing failover controls: pauses and cool-downs with their pulse events, and the planner's inputs.

The keys and their atomic operations live in :mod:`continuity.state.controls` and :mod:`continuity.state.nodes`;
this module adds what the failover side owes on top: every pause change is a pulse event, and node states get
the blueprint's freshness window.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from continuity import pause_auth
from continuity.blueprint import Blueprint
from continuity.durations import parse_duration
from continuity.errors import UsageError
from continuity.events import FAILOVER_PAUSED, FAILOVER_RESUMED
from continuity.failover import records
from continuity.signing import SigningKey
from continuity.state import controls, nodes

GLOBAL = controls.GLOBAL  # the scope of a fleet-wide pause in :func:`read_pauses`


def read_controls(client: Any, bp: Blueprint, now: float | None = None) -> tuple[set[str], bool, dict[str, float]]:
    """(services paused now, global pause in force now, cool-down end time per service)."""
    return controls.read(client, bp.services, now).as_tuple()


def set_cooldown(client: Any, service: str, until: float, now: float) -> None:
    """The key expires when the cool-down ends: it is a guard, not history (the record is the history)."""
    controls.set_cooldown(client, service, until, now)


def pause(client: Any, service: str | None, who: str, reason: str = "", now: float | None = None,
          until: float | None = None, operator: SigningKey | None = None) -> dict[str, Any]:
    """``until``: the declared end of the maintenance window (unix time); past it the pause no longer blocks
    failover but stays visible as expired until someone resumes (see :mod:`continuity.state.controls`).
    ``operator``: the key that signs the note; the detector honours only notes signed by a trusted operator
    key (:mod:`continuity.pause_auth`)."""
    now = time.time() if now is None else now
    body: dict[str, Any] = {"service": service, "who": who, "at": now, "reason": reason, "until": until}
    if operator is not None:
        body = pause_auth.sign(operator, body)
    controls.set_pause(client, service, body)
    records.pulse_for(client).emit(FAILOVER_PAUSED, service=service,
                                   data={"who": who, "scope": service or "all", "reason": reason, "until": until})
    return body


def pause_expiry(for_: str | None, until: str | None, now: float) -> float | None:
    """The unix time a pause declared with ``--for 30m`` or ``--until 2025-06-01T18:00`` ends (None: neither).

    An ``--until`` without a zone is UTC, as every time the fleet shows; an expiry in the past is refused, since
    such a pause would never block anything and only look like it does.
    """
    if for_ is not None and until is not None:
        raise UsageError("give --for or --until, not both")
    if for_ is not None:
        try:
            seconds = parse_duration(for_)
        except ValueError as exc:
            raise UsageError(f"--for: {exc}") from None
        if seconds <= 0:
            raise UsageError("--for must be longer than zero")
        return now + seconds
    if until is None:
        return None
    try:
        when = dt.datetime.fromisoformat(until.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--until: not a time: {until!r} (use e.g. 2025-06-01T18:00, UTC unless a zone is "
                         "given)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    end = when.timestamp()
    if end <= now:
        raise UsageError(f"--until {until} is already past")
    return end


def resume(client: Any, service: str | None, who: str, now: float | None = None,
           operator: SigningKey | None = None) -> bool:
    """End the pause of ``service`` (None: the fleet). With ``operator``, first leave a resume statement signed
    by it that names the note being ended: the detector treats a pause note removed without one as still in
    force (a bare ``DEL`` is not a resume, :mod:`continuity.pause_auth`)."""
    now = time.time() if now is None else now
    signer = None
    if operator is not None:
        note = controls.read_pause(client, service)
        controls.set_resume(client, service, pause_auth.sign_resume(operator, service, note, who, now))
        signer = operator.key_id
    was = controls.clear_pause(client, service)
    records.pulse_for(client).emit(FAILOVER_RESUMED, service=service,
                                   data={"who": who, "scope": service or "all", "was_paused": was, "signer": signer})
    return was


def read_pauses(client: Any, bp: Blueprint, now: float | None = None) -> dict[str, dict[str, Any]]:
    """scope ('*' for global, else service) -> who/when/why/until, and whether it expired."""
    return controls.read_pauses(client, bp.services, now)


def read_node_states(client: Any, bp: Blueprint, now: float | None = None,
                     fresh: float | None = None) -> dict[str, Any]:
    """The detector's view per node; nodes it has not classified fall back to last-seen freshness.

    The fallback lets an operator act before the detector has ever run (first
    start, detector down): a node seen within ``fresh`` seconds counts as alive.
    """
    now = time.time() if now is None else now
    fresh = fresh if fresh is not None else max(bp.policy.dead_after, 3 * bp.policy.heartbeat_interval)
    return nodes.read_states(client, bp.nodes, now, fresh)
