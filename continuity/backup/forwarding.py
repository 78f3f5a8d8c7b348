"""Where a backup set is snapshotted: here, or forwarded to the node that runs the service now.

Pure: a function of the set's services, the service's primary (the fleet's one rule,
:func:`continuity.state.routes.read_primary`, read by the shell), the node this runs on and the number of
forwards so far. A set protecting a service's live data is snapshotted on that service's current primary
(that node's disk holds the live copy: nodes own their disks). Beat sends the job to the set's home node;
when the primary is elsewhere the job is forwarded to the primary's queue, at most :data:`MAX_HOPS` times:
the primary may move meanwhile (a failover), and a job chasing it forever is worse than one that says so.
A set of plain paths is snapshotted wherever it was sent (its home node).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from continuity.errors import ContinuityError
from continuity.state.routes import Primary

MAX_HOPS = 2
FORWARD_EXPIRES = 600.0  # a forwarded job not picked up in 10 minutes is stale: the next scheduled one will come


@dataclass(frozen=True)
class Here:
    """Snapshot on this node; ``node`` is what the engine records as the source node (None: a plain set)."""

    node: str | None


@dataclass(frozen=True)
class Forward:
    """Send the job to ``node``'s queue, as forward number ``hops``."""

    node: str
    hops: int


def primary_node(primary: Primary) -> str | None:
    """The node serving the service, or None when it was never placed (only the blueprint names one)."""
    return None if primary.source == "blueprint" else primary.node


def snapshot_site(set_name: str, services: Sequence[str], primary: str | None, here: str | None,
                  hops: int) -> Here | Forward:
    """Here, or forward; :class:`~continuity.errors.ContinuityError` when the set cannot be snapshotted now.

    ``services``: the services whose live data the set protects (the first one decides);
    ``primary``: :func:`primary_node` of that service's primary.
    """
    if not services:
        return Here(None)
    if primary is None:
        raise ContinuityError(f"{set_name}: service {services[0]} has no primary to snapshot")
    if primary == here:
        return Here(here)
    if hops < MAX_HOPS:
        return Forward(primary, hops + 1)
    raise ContinuityError(f"{set_name}: the primary of {services[0]} keeps moving; not snapshotting")
