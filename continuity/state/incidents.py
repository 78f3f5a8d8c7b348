"""Open incidents: a hash id -> JSON body, one field per incident, no TTL (a human closes them).

Failovers that escalated open ``failover-<service>``; the detector opens ``storm-<time>`` for a failure storm;
drills refuse to start while any incident is open.

Operations and their guarantees: :func:`open_` (``HSET``: re-opening replaces the body), :func:`close`
(``HDEL``: True when it was open), :func:`read_all` (unreadable bodies kept as ``{"raw": ...}``), :func:`ids`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from continuity.state import keys
from continuity.state.values import object_or_raw


def open_(client: Any, iid: str, body: Mapping[str, Any], pipe: Any = None) -> None:
    (pipe or client).hset(keys.incidents(), iid, json.dumps(body))


def close(client: Any, *iids: str, pipe: Any = None) -> bool:
    if not iids:
        return False
    return bool((pipe or client).hdel(keys.incidents(), *iids))


def ids(client: Any) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else str(i) for i in client.hkeys(keys.incidents())]


def read_all(client: Any) -> dict[str, dict[str, Any]]:
    return {iid: object_or_raw(raw) for iid, raw in client.hgetall(keys.incidents()).items()}
