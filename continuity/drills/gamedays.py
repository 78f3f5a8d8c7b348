"""Game days: which scenario runs when, inside the calendar window agreed with the operators.

Pure: a function of the blueprint (contact windows of satellites) and the scenarios (calendar, which
scenarios are game days, their targets). The Celery shell (``workers/drills.py``) turns each
:class:`GameDay` into a beat entry and re-checks :func:`in_game_day` when the drill is about to run.

Each ``game_day`` scenario gets its own slot, in declaration order, on a :data:`STAGGER_MINUTES` grid from the
calendar's start (``at``, else the window's start) to the window's end, so two drills never collide on the
drill lock; a slot where a targeted satellite would be out of contact on any of the scenario's days is skipped
for the next one. A scenario with no such slot gets no game day (and is named in :attr:`Allocation.skipped`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from continuity.blueprint import WEEKDAYS, Blueprint, ContactWindow
from continuity.drills.scenarios import Scenarios
from continuity.drills.targets import resolve_static

STAGGER_MINUTES = 20
UNBOUNDED_EXPIRES = 3600.0  # a window running to midnight: a missed run is still dropped within the hour
MIN_EXPIRES = 60.0


@dataclass(frozen=True)
class GameDay:
    """One scenario's slot: weekdays, the time of day (UTC) and how long a late message may still start it."""

    scenario: str
    days: tuple[str, ...]
    at: dt.time
    expires: float


@dataclass(frozen=True)
class Allocation:
    slots: tuple[GameDay, ...]
    skipped: tuple[str, ...]  # game-day scenarios with no slot inside their satellites' contact


def in_game_day(scenarios: Scenarios, name: str, now: dt.datetime) -> bool:
    """Whether ``now`` is inside the calendar window on one of the scenario's days."""
    sc = scenarios.get(name)
    cal = scenarios.calendar
    days = sc.schedule.days if sc.schedule else cal.days
    return ContactWindow(start=cal.window.start, end=cal.window.end, days=days).contains(now)


def run_times(scenarios: Scenarios) -> list[dt.time]:
    """The grid of start times inside the calendar window."""
    cal = scenarios.calendar
    start = dt.datetime.strptime(cal.at or cal.window.start, "%H:%M")
    end = dt.datetime.strptime(cal.window.end, "%H:%M") if cal.window.end != "24:00" else start.replace(hour=23,
                                                                                                      minute=59)
    out = []
    t = start
    while t < end:
        out.append(t.time())
        t += dt.timedelta(minutes=STAGGER_MINUTES)
    return out


def satellites_in_contact(bp: Blueprint, nodes: tuple[str, ...], days: list[str] | tuple[str, ...],
                          at: dt.time) -> bool:
    """Every targeted satellite is in contact at ``at`` on every calendar day (checked on a reference week)."""
    monday = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # a Monday
    for day in days:
        when = monday + dt.timedelta(days=WEEKDAYS.index(day), hours=at.hour, minutes=at.minute)
        for node in nodes:
            if bp.nodes[node].kind != "core" and not bp.in_contact(node, when):
                return False
    return True


def allocate(bp: Blueprint, scenarios: Scenarios) -> Allocation:
    """A slot for each game-day scenario (see the module docstring); ``expires`` is the rest of the window."""
    cal = scenarios.calendar
    grid = run_times(scenarios)
    window_end = dt.datetime.strptime(cal.window.end, "%H:%M") if cal.window.end != "24:00" else None
    slots: list[GameDay] = []
    skipped: list[str] = []
    i = 0
    for name in scenarios.names():
        sc = scenarios.get(name)
        if not sc.game_day:
            continue
        days = tuple(sc.schedule.days if sc.schedule else cal.days)
        nodes = resolve_static(sc.target, bp).nodes
        slot = next((t for t in grid[i:] if satellites_in_contact(bp, nodes, days, t)), None)
        if slot is None:
            skipped.append(name)
            continue
        i = grid.index(slot) + 1
        remaining = ((window_end - dt.datetime.combine(window_end.date(), slot)).total_seconds()
                     if window_end else UNBOUNDED_EXPIRES)
        slots.append(GameDay(name, days, slot, max(MIN_EXPIRES, remaining)))
    return Allocation(tuple(slots), tuple(skipped))
