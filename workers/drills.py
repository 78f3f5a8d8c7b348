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

from continuity import paths, settings, text
from continuity.blueprint import Blueprint
from continuity.drills import gamedays
from continuity.drills.runner import Runner
from continuity.drills.scenarios import Scenarios, load_scenarios
from continuity.errors import ContinuityError
from workers.app import CONTROL_QUEUE
from workers.task import continuity_task, progress_reporter

log = logging.getLogger(__name__)
RUN_TASK = "continuity.drills.run"
# what the task returns of the drill record (the whole record is in Redis and the pulse history)
RESULT_KEYS = ("id", "scenario", "status", "metrics", "expectations", "aborted", "postmortem", "refusal", "target")


def game_days_enabled() -> bool:
    return settings.GAME_DAYS.get()



def drill_failure(res: dict[str, Any]) -> str | None:
    """A drill that ran and failed (or was aborted) is a failed task; a refusal or a dry run is not."""
    if res.get("status") not in ("failed", "aborted"):
        return None
    missed = [f"{e['name']} (expected {text.expectation(e)[0]}, measured {text.expectation(e)[1]})"
              for e in res.get("expectations") or [] if not e.get("ok")]
    why = "; ".join(missed) or res.get("aborted") or "see its record"
    return f"drill {res.get('scenario')} {res.get('status')}: {why} (record {res.get('id')})"


@continuity_task(RUN_TASK, bind=True, time_limit=900, soft_time_limit=840, acks_late=False,
                 failed_when=drill_failure)
def run(self: Any, name: str, dry_run: bool = False, game_day: bool = False, *, client: Any,
        bp: Blueprint) -> dict[str, Any]:
    """Run one scenario; a refusal (incident open, degraded, wrong environment) is a result, not a crash.

    A game-day run (sent by beat) re-checks the calendar itself: a scheduler catching up on a missed
    slot, or a message delivered late, must not start a drill outside the agreed window."""
    scenarios = load_scenarios(paths.scenarios_path(), bp)
    if game_day and not (game_days_enabled() and gamedays.in_game_day(scenarios, name, dt.datetime.now(dt.UTC))):
        return {"scenario": name, "status": "refused", "reason": "outside the game-day calendar (or disabled)"}

    report = progress_reporter(self)

    def progress(phase: str, info: dict[str, Any]) -> None:
        report(f"drill {name}: {phase}", {"scenario": name, "phase": phase, **info})

    try:
        record = Runner(client, bp, scenarios, progress=progress).run(name, dry_run=dry_run, game_day=game_day)
    except ContinuityError as exc:
        return {"scenario": name, "status": "refused", "reason": str(exc)}
    return {k: record.get(k) for k in RESULT_KEYS if k in record}


def beat_entries(bp: Blueprint, scenarios: Scenarios | None = None) -> dict[str, dict[str, Any]]:
    """Game days (slots from :func:`continuity.drills.gamedays.allocate`): staggered inside the calendar
    window, never while a targeted satellite is out of contact, ``expires`` = the rest of the window (a missed
    game day is not run late). ``CONTINUITY_GAME_DAYS=off`` schedules none (test fleets, freezes)."""
    if not game_days_enabled():
        return {}
    if scenarios is None:
        try:
            scenarios = load_scenarios(paths.scenarios_path(), bp)
        except ContinuityError as exc:
            log.warning("no game days scheduled: %s", exc)
            return {}
    plan = gamedays.allocate(bp, scenarios)
    for name in plan.skipped:
        log.warning("game day %s not scheduled: no slot in the window with its satellites in contact", name)
    return {f"{RUN_TASK}:{g.scenario}": {
        "task": RUN_TASK,
        "schedule": crontab(minute=g.at.minute, hour=g.at.hour, day_of_week=",".join(g.days)),
        "args": [g.scenario],
        "kwargs": {"game_day": True},
        "options": {"queue": CONTROL_QUEUE, "routing_key": CONTROL_QUEUE, "expires": g.expires},
    } for g in plan.slots}
