"""Human durations (``30s``, ``5m``, ``1h30m``, ``250ms``) as seconds.

Objectives are declared by people, so the accepted syntax is the one people
write in runbooks; a bare number means seconds.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """Return seconds; raise ValueError with the accepted syntax on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h)")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h)")
    text = value.strip().lower().replace(" ", "")
    if not text:
        raise ValueError("empty duration (use e.g. 30s, 5m, 1h)")
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h30m, 250ms)")
    return total


def format_duration(seconds: float) -> str:
    """Short human form used in tables: 850ms, 12.3s, 4m05s, 2h10m."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m}m{s:02d}s"
    h, rem = divmod(int(round(seconds)), 3600)
    return f"{h}h{rem // 60:02d}m"
