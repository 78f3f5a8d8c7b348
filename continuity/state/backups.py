"""Per backup set freshness in Redis: ``backup:<set>`` (hash, no TTL) of the last snapshot and the last verified
restore, written by the node that ran them, read by the scorecard, drills and the failover's prepare step.

Fields (all text): ``last_snapshot``, ``last_snapshot_time``, ``last_snapshot_files``, ``last_snapshot_bytes``,
``last_snapshot_duration``, ``repository_bytes`` (after the last snapshot or forget), ``last_verify_time`` /
``last_verify_ok`` / ``last_verify_duration`` (the last restore drill, passed or not), ``last_verified`` /
``last_verified_snapshot_time`` / ``last_verified_time`` (the last one that passed), ``last_<kind>_error``,
``last_<kind>_error_time`` and the like; readers take what they need and treat a missing or unreadable field as
unknown.

Operations and their guarantees: :func:`record` (one ``HSET``: fields written together; None values skipped, so
a partial update never erases what another writer set), :func:`read` (one set), :func:`read_many` (pipelined),
:func:`field`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from continuity.state import keys


def record(client: Any, set_id: str, fields: Mapping[str, Any]) -> None:
    mapping = {k: str(v) for k, v in fields.items() if v is not None}
    if mapping:
        client.hset(keys.backup_status(set_id), mapping=mapping)


def read(client: Any, set_id: str) -> dict[str, str]:
    return dict(client.hgetall(keys.backup_status(set_id)))


def field(client: Any, set_id: str, name: str) -> str | None:
    value = client.hget(keys.backup_status(set_id), name)
    return None if value is None else str(value)


def read_many(client: Any, set_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """Sets with any status at all (sets never run are left out)."""
    ids = list(set_ids)
    with client.pipeline(transaction=False) as pipe:
        for s in ids:
            pipe.hgetall(keys.backup_status(s))
        res = pipe.execute()
    return {s: dict(raw) for s, raw in zip(ids, res, strict=True) if raw}
