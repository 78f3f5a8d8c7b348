"""Configuration errors a running fleet is living with: ``config:errors`` (hash ``<node>|<file>`` -> JSON
{file, node, error, since}, no TTL: a broken file stays visible until someone fixes it).

Written by each process that keeps the last good content of a file it can no longer load, cleared by the same
process once the file loads again, read by ``continuity status``.

Operations: :func:`report` (one ``HSET``), :func:`clear` (one ``HDEL``), :func:`read_all` (never raises on a
garbled value).
"""

from __future__ import annotations

import json
from typing import Any

from continuity.state import keys
from continuity.state.values import object_or_raw


def _field(node: str, path: str) -> str:
    return f"{node}|{path}"


def report(client: Any, node: str, path: str, error: str, since: float) -> None:
    client.hset(keys.config_errors(), _field(node, path),
                json.dumps({"file": path, "node": node, "error": error, "since": since}))


def clear(client: Any, node: str, path: str) -> None:
    client.hdel(keys.config_errors(), _field(node, path))


def read_all(client: Any) -> list[dict[str, Any]]:
    return [object_or_raw(raw) for _field_, raw in sorted(client.hgetall(keys.config_errors()).items())]
