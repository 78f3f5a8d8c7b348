"""Celery shell for drills: ``continuity.drills.run`` on the control queue, and the game-day beat entries.

The task is thin: it builds a :class:`~continuity.drills.runner.Runner` and reports its phases
through ``update_state`` so Flower shows where a drill is. It is acked early on purpose: a drill
interrupted by a lost worker must not be re-run automatically by redelivery — its rollbacks are
finished by the next run's recovery step instead, and a human decides whether to rehearse again.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery.schedules import crontab

from continuity import paths, settings
from continuity.blueprint import WEEKDAYS, Blueprint, ContactWindow, load_blueprint
from continuity.drills.runner import Runner
from continuity.drills.scenarios import Scenarios, load_scenarios
from continuity.drills.targets import resolve_static
from continuity.errors import ContinuityError
from continuity.redisd import connect
from workers.app import CONTROL_QUEUE, app

log = logging.getLogger(__name__)
RUN_TASK = "continuity.drills.run"
STAGGER_MINUTES = 20


def game_days_enabled() -> bool:
    return settings.GAME_DAYS.get()


def in_game_day(scenarios: Scenarios, name: str, now: dt.datetime) -> bool:
    sc = scenarios.get(name)
    cal = scenarios.calendar
    days = sc.schedule.days if sc.schedule else cal.days
    return ContactWindow(start=cal.window.start, end=cal.window.end, days=days).contains(now)


@app.task(name=RUN_TASK, bind=True, time_limit=900, soft_time_limit=840, acks_late=False)
def run(self: Any, name: str, dry_run: bool = False, game_day: bool = False) -> dict[str, Any]:
    """Run one scenario; a refusal (incident open, degraded, wrong environment) is a result, not a crash.

    A game-day run (sent by beat) re-checks the calendar itself: a scheduler catching up on a missed
    slot, or a message delivered late, must not start a drill outside the agreed window."""
    bp = load_blueprint(paths.blueprint_path())
    scenarios = load_scenarios(paths.scenarios_path(), bp)
    if game_day and not (game_days_enabled() and in_game_day(scenarios, name, dt.datetime.now(dt.UTC))):
        return {"scenario": name, "status": "refused", "reason": "outside the game-day calendar (or disabled)"}

    def progress(phase: str, info: dict[str, Any]) -> None:
        self.update_state(state="PROGRESS", meta={"scenario": name, "phase": phase, **info})

    try:
        record = Runner(connect(), bp, scenarios, progress=progress).run(name, dry_run=dry_run)
    except ContinuityError as exc:
        return {"scenario": name, "status": "refused", "reason": str(exc)}
    keep = ("id", "scenario", "status", "metrics", "expectations", "aborted", "postmortem", "refusal", "target")
    return {k: record.get(k) for k in keep if k in record}


def _run_times(scenarios: Scenarios) -> list[dt.time]:
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


def _satellite_ok(bp: Blueprint, nodes: tuple[str, ...], days: list[str], at: dt.time) -> bool:
    """Every targeted satellite is in contact at ``at`` on every calendar day (checked on a reference week)."""
    monday = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # a Monday
    for day in days:
        when = monday + dt.timedelta(days=WEEKDAYS.index(day), hours=at.hour, minutes=at.minute)
        for node in nodes:
            if bp.nodes[node].kind != "core" and not bp.in_contact(node, when):
                return False
    return True


def beat_entries(bp: Blueprint, scenarios: Scenarios | None = None) -> dict[str, dict[str, Any]]:
    """Game days: each ``game_day`` scenario gets its own slot inside the calendar window (staggered, so
    two drills never collide on the drill lock); slots where a targeted satellite would be out of
    contact are skipped. ``expires`` = the rest of the window: a missed game day is not run late.
    ``CONTINUITY_GAME_DAYS=off`` schedules none (test fleets, freezes)."""
    if not game_days_enabled():
        return {}
    if scenarios is None:
        try:
            scenarios = load_scenarios(paths.scenarios_path(), bp)
        except ContinuityError as exc:
            log.warning("no game days scheduled: %s", exc)
            return {}
    cal = scenarios.calendar
    slots = _run_times(scenarios)
    window_end = dt.datetime.strptime(cal.window.end, "%H:%M") if cal.window.end != "24:00" else None
    entries: dict[str, dict[str, Any]] = {}
    i = 0
    for name in scenarios.names():
        sc = scenarios.get(name)
        if not sc.game_day:
            continue
        days = (sc.schedule.days if sc.schedule else cal.days)
        nodes = resolve_static(sc.target, bp).nodes
        slot = next((t for t in slots[i:] if _satellite_ok(bp, nodes, days, t)), None)
        if slot is None:
            log.warning("game day %s not scheduled: no slot in the window with its satellites in contact", name)
            continue
        i = slots.index(slot) + 1
        remaining = ((window_end - dt.datetime.combine(window_end.date(), slot)).total_seconds()
                     if window_end else 3600.0)
        entries[f"{RUN_TASK}:{name}"] = {
            "task": RUN_TASK,
            "schedule": crontab(minute=slot.minute, hour=slot.hour, day_of_week=",".join(days)),
            "args": [name],
            "kwargs": {"game_day": True},
            "options": {"queue": CONTROL_QUEUE, "routing_key": CONTROL_QUEUE, "expires": max(60.0, remaining)},
        }
    return entries
