"""The beat scheduler: RedBeat's Redis lock plus two things the fleet needs.

* The schedule is rebuilt from ops/ at every start (``beat_schedule.build_schedule``),
  and RedBeat keeps each entry's last run in Redis, so a standby beat that takes
  the lock continues the schedule instead of repeating it.
* Jobs tagged with a tier are skipped while the continuity mode sheds that tier
  (degraded: capacity goes to what must survive), and each job is told the due
  time it was sent for, which makes a double run for one due time detectable.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.utils.time import maybe_make_aware
from redbeat import RedBeatScheduler
from redbeat.schedulers import get_redis

import beat_schedule
from continuity.beatplan import should_skip
from continuity.state import mode as modes

log = logging.getLogger(__name__)


class ContinuityScheduler(RedBeatScheduler):
    def setup_schedule(self) -> None:
        self.app.conf.beat_schedule = beat_schedule.build_schedule()
        super().setup_schedule()

    def _mode(self) -> dict[str, Any]:
        try:
            return modes.read(get_redis(self.app)) or {}
        except Exception:  # noqa: BLE001 - no mode known: schedule everything
            return {}

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        tier = (entry.options.get("headers") or {}).get("continuity_tier")
        if should_skip(tier, self._mode()):
            log.info("beat: skipping %s (tier %s shed while degraded)", entry.name, tier)
            if advance:
                self.reserve(entry)
            return None
        if "due" in (entry.kwargs or {}):
            due_at = entry.due_at
            if due_at is not None:
                entry.kwargs = {**entry.kwargs, "due": maybe_make_aware(due_at).timestamp()}
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
