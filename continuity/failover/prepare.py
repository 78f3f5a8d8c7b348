"""Where a failover candidate's data comes from: what survives, never the old primary's disk.

Nodes own their disks (issue 10 item 6): the old primary's files went with its
node, or sit behind a partition, and nothing on the candidate opens them. In
order of preference, prepare uses:

1. ``replica`` — the candidate's own copy, kept by continuous replication
   (:mod:`continuity.replication`); enough on its own when it holds every record
   of the role's committed position;
2. ``standby`` — the freshest reachable standby's copy, fetched over the
   replication protocol (:mod:`continuity.replication.catchup`), when one holds
   more than the candidate;
3. ``snapshot`` — the latest verified snapshot from the backup repository, when
   it is fresher than both.

Freshness is judged by the ledger's record count when both sides know it (a
record count is what replication positions and the committed position are made
of), by the last ``seq`` next, by time last; a tie keeps the earlier source in
that order, because copying equal data only costs recovery time.
``force="backup"`` goes straight to the snapshot when it is fresher than the
local copy (the restore path exercised on purpose).

The failover record says which source was used, the position the new epoch
starts from, and the data loss measured against the committed position
(:func:`loss`): records the fleet acknowledged that the new primary does not
have, and the seconds they span.

Pure decider: no Redis, no disk, no clock of its own (``FORCE_ENV`` is only the
variable's name). Its I/O shell is ``prepare`` in :mod:`continuity.failover.steps`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from continuity import settings

Choice = Literal["replica", "standby", "snapshot"]
FORCE_ENV = settings.FAILOVER_PREPARE.name  # named in messages; read by the prepare step


@dataclass(frozen=True)
class DataState:
    """How fresh one copy of a service's data is: last ledger seq, time of its newest record, and its ledger
    record count (None: unknown)."""

    last_seq: int | None = None
    time: float | None = None
    count: int | None = None


@dataclass(frozen=True)
class Decision:
    source: Choice
    reason: str
    node: str | None = None  # the standby fetched from


def at_least_as_fresh(a: DataState | None, b: DataState | None) -> bool:
    """Is ``a`` at least as fresh as ``b``? Missing data is older than anything; count beats seq beats time."""
    if b is None:
        return True
    if a is None:
        return False
    for x, y in ((a.count, b.count), (a.last_seq, b.last_seq)):
        if x is not None and y is not None:
            return x >= y
        if y is not None:  # b has records, a has none we could count
            return False
        if x is not None:
            return True
    return (a.time or 0.0) >= (b.time or 0.0)


def _check_force(force: str | None) -> str:
    forced = (force or "").strip().lower()
    if forced not in ("", "auto", "backup"):
        raise ValueError(f"{FORCE_ENV}={force!r}: use 'backup' or 'auto'")
    return forced


def needs_more(local: DataState | None, committed: DataState | None, force: str | None = None) -> bool:
    """Must prepare look beyond the candidate's own copy? Not when it holds every committed record."""
    if _check_force(force) == "backup":
        return True
    return local is None or committed is None or not at_least_as_fresh(local, committed)


def decide(local: DataState | None, standbys: Mapping[str, DataState], backup: DataState | None,
           committed: DataState | None = None, force: str | None = None) -> Decision:
    """Choose the candidate's data source.

    ``local``: the candidate's own copy (None: it has none). ``standbys``: what each reachable standby
    offered, in placement order. ``backup``: the latest verified snapshot, else None. ``committed``: the
    role's committed position, if known. ``force``: ``"backup"`` ignores the standbys.
    """
    forced = _check_force(force)
    if forced == "backup":
        if backup is not None and not at_least_as_fresh(local, backup):
            return Decision("snapshot", f"forced by {FORCE_ENV}: restoring the latest verified snapshot")
        return Decision("replica", f"forced by {FORCE_ENV}, but the own copy is at least as fresh as the "
                                   "latest verified snapshot" if backup is not None else
                                   f"forced by {FORCE_ENV}, but there is no verified snapshot")
    if local is not None and committed is not None and at_least_as_fresh(local, committed):
        return Decision("replica", "the own replica holds every committed record")
    best: Decision = Decision("replica", "no reachable standby holds more than the own replica")
    best_state = local
    for node, state in standbys.items():
        if not at_least_as_fresh(best_state, state):
            best, best_state = Decision("standby", f"{node}'s copy is the freshest reachable", node), state
    if backup is not None and not at_least_as_fresh(best_state, backup):
        return Decision("snapshot", "the latest verified snapshot is fresher than every surviving copy")
    if best.source == "replica" and local is None and not standbys and backup is None:
        return Decision("replica", "nothing survives anywhere: no replica, no reachable standby, no snapshot")
    return best


def loss(start: DataState | None, committed: DataState | None,
         synced: float | None = None) -> tuple[int | None, float | None]:
    """Acknowledged records the new epoch starts without, and the seconds they span (None: cannot tell).

    Records by ledger count; seconds from the newest such record's time back to where the lost ones can have
    begun: the newest record the new primary has, or later, ``synced``, when the copy it starts from last
    knew it held everything the old primary had written (after an idle spell the newest record held is
    older than the loss; 0 when nothing is lost).
    """
    if committed is None or committed.count is None:
        return None, None
    have = 0 if start is None else start.count
    if have is None:
        return None, None
    records = max(0, committed.count - have)
    if records == 0:
        return 0, 0.0
    if committed.time is None or start is None or start.time is None:
        return records, None
    since = max(start.time, synced) if synced is not None else start.time
    return records, round(max(0.0, committed.time - since), 3)
