"""Decoding JSON values read from Redis without ever raising: anyone with Redis access can write anything there,
and a reader (status, the planner, a drill guard) must report a garbled value, not crash on it."""

from __future__ import annotations

import json
from typing import Any


def object_or_raw(raw: Any) -> dict[str, Any]:
    """A JSON object as a dict; anything else kept visible as ``{"raw": value}``."""
    try:
        value = json.loads(raw)
    except (ValueError, TypeError):
        return {"raw": raw}
    return value if isinstance(value, dict) else {"raw": raw}
