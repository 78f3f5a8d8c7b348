"""Typed values the backup engine hands to the rest of the fleet.

Inside the engine, snapshot records and trees stay the JSON documents the repository stores (their format is the
repository's, restic-shaped, and read by tools that expect it). What crosses into other packages is typed here:
the failover's prepare step decides from a :class:`SnapshotInfo` (how fresh a proven snapshot is) and reports a
:class:`ServiceRestore` (what a staged, proven restore brought back), so a renamed key cannot silently turn a
freshness comparison into ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


def timestamp(value: Any) -> float | None:
    """A snapshot time (ISO 8601 as stored, or a number) as unix time; None when unreadable."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def ledger_manifest(snap: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of the snapshot's ledger source (records, last seq), {} when it has none."""
    for src in snap.get("sources", []):
        if src.get("kind") == "ledger" and src.get("manifest"):
            return dict(src["manifest"])
    return {}


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot holds, from its record alone: id, time, the node it was taken on, its ledger position."""

    snapshot: str
    snapshot_time: str
    snapshot_ts: float | None
    source_node: str | None
    ledger_last_seq: int | None
    ledger_records: int | None

    @classmethod
    def of(cls, snap: Mapping[str, Any]) -> SnapshotInfo:
        man = ledger_manifest(snap)
        last, records = man.get("last_seq"), man.get("records")
        return cls(snapshot=str(snap["id"]), snapshot_time=str(snap["time"]), snapshot_ts=timestamp(snap["time"]),
                   source_node=snap.get("hostname"), ledger_last_seq=None if last is None else int(last),
                   ledger_records=None if records is None else int(records))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServiceRestore(SnapshotInfo):
    """A service directory replaced by a proven snapshot: which one, how much, where, how long it took."""

    files: int = 0
    bytes: int = 0
    target: str = ""
    duration: float = 0.0


@dataclass(frozen=True)
class PitrServiceRestore:
    """A service directory replaced by its state at a point in time: a base snapshot (None: the shipped log
    reached back to the first line) plus ``records_from_log`` records of the shipped ledger log.

    ``last_seq`` / ``last_ts`` is where the restored ledger ends; ``newest_seq`` / ``newest_ts`` the newest record
    anything in the repository holds (equal when the newest was asked for). A prepare measures its data loss
    against what the fleet acknowledged from these.
    """

    set_name: str
    base: ServiceRestore | None
    ledger: str
    base_snapshot: str | None
    base_records: int
    records: int
    records_from_log: int
    segments: int
    last_seq: int | None
    last_ts: float | None
    newest_seq: int | None
    newest_ts: float | None
    target: str
    duration: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
