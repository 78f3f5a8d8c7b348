"""The continuity mode as Redis holds it: ``mode`` = JSON {mode, unhealthy, shed_tiers, ...}, written by the sweep.

Only the detector's sweep writes it (inside its lock-guarded transaction, and only when it changed); everyone
else reads it. :func:`parse` accepts what older fleets wrote (a bare word) and never raises: an unreadable value
becomes ``{"mode": <text>}``, which is not ``normal``, so nothing that waits for normal (drills) goes ahead on
it. An absent key (no sweep ran yet) is None: each reader says what that means to it.

Operations: :func:`read` (one ``GET``), :func:`parse`, :func:`encode`, :func:`write` (one ``SET``, or queued on
the caller's pipeline).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from continuity.state import keys


def parse(raw: Any) -> dict[str, Any] | None:
    if not raw:
        return None
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        value = json.loads(text)
    except ValueError:
        return {"mode": text}
    return value if isinstance(value, dict) else {"mode": str(value)}


def name(doc: Mapping[str, Any] | None, missing: str) -> str:
    """The mode word of a parsed value; ``missing`` when there is none."""
    return str(doc.get("mode") or missing) if doc else missing


def read(client: Any) -> dict[str, Any] | None:
    return parse(client.get(keys.mode()))


def encode(doc: Mapping[str, Any]) -> str:
    return json.dumps(dict(doc))


def write(client: Any, doc: Mapping[str, Any], pipe: Any = None) -> None:
    (pipe or client).set(keys.mode(), encode(doc))
