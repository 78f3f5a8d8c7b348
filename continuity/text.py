"""How values read for people: no Python reprs, no seventeen-digit floats.

Tables and one-line summaries are read during incidents and pasted into tickets; ``[(200, 200)]`` and
``26.070788145065308`` are noise there. :func:`plain` turns any value a record holds into a short text
(seconds as durations when the caller says they are seconds); :func:`expectation` does it for a drill's
expectation, whose unit follows from its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from continuity.durations import format_duration

# expectations measured in seconds (continuity/drills/measure.py names them)
SECONDS = ("MTTR within RTO", "achieved RPO within RPO", "detected in time")


def plain(value: Any, seconds: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and seconds:
        return format_duration(float(value))
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={plain(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(plain(v) for v in value) or "—"
    return str(value)


def expectation(e: Mapping[str, Any]) -> tuple[str, str]:
    """(expected, measured) of one drill expectation, as text."""
    seconds = e.get("name") in SECONDS
    expected = e.get("expected")
    shown = plain(expected, seconds)
    return (f"≤ {shown}" if seconds and expected is not None else shown), plain(e.get("measured"), seconds)
