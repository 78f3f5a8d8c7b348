"""A node never serves less than was acknowledged: who is behind the role's committed position, and by how much.

The committed position (:class:`continuity.state.replication.Committed`, one per
ledger source of a service) is the most the fleet told clients it stored, at the
epoch it was told. A node whose own copy holds fewer records than that — a
replaced machine back on an empty disk, a standby that was cut off, a primary
restarted on a disk that lost its tail — must not take the role: not by
reclaiming a lease that still names it, not by restarting the service in place,
not by being promoted while a node that holds everything is alive. It rejoins as
a standby and its replicator catches it up from the serving primary.

Pure decider: no Redis, no disk, no clock. Its I/O shells are the node agent
(:mod:`continuity.detect.agent`, which feeds it the record counts of its own
files) and the detector's sweep (:mod:`continuity.detect.sweep`, which feeds the
planner :func:`shortfalls` of the positions standbys published); both read the
committed positions from Redis. Redis can only make a node *more* careful here:
a garbled or absent committed position guards nothing, and a promotion still
checks every byte it fetches against the hash chain
(:mod:`continuity.replication.catchup`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class CommittedLike(Protocol):
    source: str
    epoch: int
    count: int


class AppliedLike(Protocol):
    node: str
    source: str
    count: int | None


def shortfall(held: Mapping[str, int | None], committed: Mapping[str, CommittedLike]) -> str | None:
    """Why a node holding ``held`` (source -> complete records it has; None or absent: nothing) must not serve the
    role whose committed positions are ``committed``; None when it holds at least every committed record."""
    short = []
    for source, c in sorted(committed.items()):
        have = held.get(source) or 0
        if have < int(c.count):
            short.append(f"{source}: holds {have} of the {int(c.count)} records committed at epoch {int(c.epoch)}")
    return "behind the committed position (" + "; ".join(short) + ")" if short else None


def records_short(held: Mapping[str, int | None], committed: Mapping[str, CommittedLike]) -> int:
    """How many committed records ``held`` lacks, summed over sources (0: caught up)."""
    return sum(max(0, int(c.count) - (held.get(s) or 0)) for s, c in committed.items())


def shortfalls(nodes: Iterable[str], applied: Iterable[AppliedLike],
               committed: Mapping[str, CommittedLike]) -> dict[str, int]:
    """Node -> committed records it lacks by its published applied positions (a node that published nothing
    holds nothing we know of). Empty when nothing is committed: then nobody is known to be behind."""
    if not committed:
        return {}
    held: dict[str, dict[str, int | None]] = {n: {} for n in nodes}
    for a in applied:
        if a.node in held:
            held[a.node][a.source] = max(held[a.node].get(a.source) or 0, a.count or 0)
    return {n: records_short(h, committed) for n, h in held.items()}


def as_record(committed: Mapping[str, Any]) -> dict[str, Any]:
    """JSON form of committed positions for a failover record or an event: source -> {epoch, count, last_seq}."""
    return {s: {"epoch": int(c.epoch), "count": int(c.count), "last_seq": getattr(c, "last_seq", None)}
            for s, c in sorted(committed.items())}
