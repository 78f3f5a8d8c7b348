"""Where a failover candidate's data comes from: keep it, copy the old primary's, or restore a snapshot.

Pure: the prepare step (``steps.prepare``) gathers the facts — how fresh the
candidate's local copy is, whether the old primary's data can be read, which
verified snapshot exists — and this module decides. Freshness is judged by
the last ledger sequence number when both sides know it (a record count is
what clients were promised), by time otherwise; a tie keeps the local copy,
because copying equal data only costs recovery time.

The old primary's directory is the best source when it is readable (the demo
fleet shares one host; on real hosts it is usually gone with its node), so
it is the fast path, labelled ``replica``. A verified snapshot is the
fallback when the local copy is stale and the old primary is unreachable.
``force="backup"`` treats the old primary as unreachable, so the backup path
can be exercised on one host.

Pure decider: no Redis, no disk, no clock of its own (``FORCE_ENV`` is only the
variable's name). Its I/O shell is ``prepare`` in :mod:`continuity.failover.steps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from continuity import settings

Choice = Literal["local", "replica", "backup"]
FORCE_ENV = settings.FAILOVER_PREPARE.name  # named in messages; read by the prepare step


@dataclass(frozen=True)
class DataState:
    """How fresh one copy of a service's data is: last ledger seq and/or a timestamp (None: unknown)."""

    last_seq: int | None = None
    time: float | None = None


@dataclass(frozen=True)
class Decision:
    source: Choice
    reason: str


def at_least_as_fresh(a: DataState | None, b: DataState | None) -> bool:
    """Is ``a`` at least as fresh as ``b``? Missing data is older than anything; seq beats time."""
    if b is None:
        return True
    if a is None:
        return False
    if a.last_seq is not None and b.last_seq is not None:
        return a.last_seq >= b.last_seq
    if b.last_seq is not None:  # b has records, a has none we could count
        return False
    if a.last_seq is not None:
        return True
    return (a.time or 0.0) >= (b.time or 0.0)


def decide(local: DataState | None, replica: DataState | None, backup: DataState | None,
           force: str | None = None) -> Decision:
    """Choose the candidate's data source.

    ``local``: the candidate's own copy (None: it has none). ``replica``: the
    old primary's data if readable, else None. ``backup``: the latest verified
    snapshot, else None. ``force``: ``"backup"`` ignores the replica.
    """
    forced = (force or "").strip().lower()
    if forced not in ("", "auto", "backup"):
        raise ValueError(f"{FORCE_ENV}={force!r}: use 'backup' or 'auto'")
    if forced == "backup":
        replica = None
    if replica is not None:
        if at_least_as_fresh(local, replica) and local is not None:
            return Decision("local", "the local copy is as fresh as the old primary's")
        return Decision("replica", "the old primary's data is readable and newer (replica copy)")
    if backup is not None and not at_least_as_fresh(local, backup):
        why = "forced by " + FORCE_ENV if forced == "backup" else "the old primary's data is unreachable"
        return Decision("backup", f"the local copy is stale and {why}: restoring the latest verified snapshot")
    if backup is not None:
        return Decision("local", "the local copy is at least as fresh as the latest verified snapshot")
    return Decision("local", "nothing fresher to take: old primary unreachable and no verified snapshot")
