"""The last verification of each host's pulse history file: ``pulse:verify`` (hash ``<host>|<file>`` -> JSON
{at, ok, count, reason, bad_line}, no TTL).

The hash chain is only worth something if someone walks it; the exporter does, every few minutes, and records the
result here so ``continuity metrics`` (and any exporter that restarts) can show the last result without walking a
large file again. One field per host and file: each host keeps its own copy of the history.

Operations: :func:`record` (one ``HSET``: the newer result replaces the older), :func:`read` (one ``HGET``; an
unreadable value is None, as if never verified).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from continuity.state import keys


def _field(host: str, path: str) -> str:
    return f"{host}|{path}"


def record(client: Any, host: str, path: str, result: Mapping[str, Any]) -> None:
    client.hset(keys.pulse_verify(), _field(host, path), json.dumps(dict(result), default=str))


def read(client: Any, host: str, path: str) -> dict[str, Any] | None:
    raw = client.hget(keys.pulse_verify(), _field(host, path))
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
