"""The beat scheduler: RedBeat's Redis lock plus what the fleet needs from beat.

* The schedule is rebuilt from ops/ at every start (``beat_schedule.build_schedule``),
  and RedBeat keeps each entry's last run in Redis, so a standby beat that takes
  the lock continues the schedule instead of repeating it.
* Jobs tagged with a tier are skipped while the continuity mode sheds that tier
  (degraded: capacity goes to what must survive), and each job is told the due
  time it was sent for, which makes a double run for one due time detectable.
* **Beat survives a Redis blip.** RedBeat's ``tick`` extends its lock first and lets any error escape, and
  celery beat exits on an exception from ``tick``: a 3-5 s Redis restart used to end beat, and a restarted beat
  then waited out its predecessor's lock. RedBeat also swallows a failed lock acquisition at start (Celery
  squashes errors of ``beat_init`` handlers) and then dies on ``'NoneType' object has no attribute 'extend'``
  at the first tick (seen on every Sentinel failover). Here ``tick`` holds the lock itself: a connection error
  means "try again in a second"; a lock that lapsed meanwhile (expired during the outage, or taken by another
  beat) is taken again if free, else this beat stands by, polling like a standby started that way.
* **Takeover bound.** A standby polls every ``beat_max_loop_interval``; the lock lives
  ``CONTINUITY_BEAT_LOCK_TIMEOUT`` minus that, so a standby takes over within ``CONTINUITY_BEAT_LOCK_TIMEOUT``.

The failure detector is not scheduled here (it is a loop in the control workers, ``workers/control.py``), so
nothing that beat does or fails to do pauses detection.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.utils.time import maybe_make_aware
from redbeat import RedBeatScheduler
from redbeat.schedulers import get_redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

import beat_schedule
from continuity import paths, settings
from continuity.backup.scheduling import pass_to_start
from continuity.beatplan import should_skip
from continuity.blueprint import load_blueprint
from continuity.passes import Schedule
from continuity.state import mode as modes

log = logging.getLogger(__name__)
beat_log = logging.getLogger("celery.beat")  # where RedBeat and celery beat say "Acquired lock" & co.

# Redis is restarting, failing over or unreachable: wait and try again (a read-only replica after a failover
# is the same story). BusyLoadingError (a restarted Redis loading its AOF) is a ConnectionError.
REDIS_TROUBLE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
RETRY_AFTER = 1.0
LOG_EVERY = 30.0


class ContinuityScheduler(RedBeatScheduler):
    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self._trouble_since: float | None = None
        self._contact: dict[str, Schedule] | None = None  # node -> passes, loaded at the first pass-driven entry
        self._logged_at = -LOG_EVERY
        super().__init__(app, *args, **kwargs)
        self.lock_timeout = lock_timeout(settings.BEAT_LOCK_TIMEOUT.get(), self.max_interval)

    def setup_schedule(self) -> None:
        """Build the schedule from ops/ and store it in Redis, waiting out a Redis that is not there yet."""
        self.app.conf.beat_schedule = beat_schedule.build_schedule()
        while True:
            try:
                super().setup_schedule()
                self._answered()
                return
            except REDIS_TROUBLE as exc:
                self._trouble("storing the schedule", exc)
                time.sleep(RETRY_AFTER)

    def tick(self, min: Any = min, **kwargs: Any) -> float:  # noqa: A002 - RedBeat's signature
        """Hold the lock (or stand by), then send what is due; never raises on a Redis error."""
        try:
            if self.lock_key and not self._hold_lock():
                return float(self.max_interval)
            wait = self._send_due(min)
            self._answered()
            return wait
        except REDIS_TROUBLE as exc:
            self._trouble("ticking", exc)
            return RETRY_AFTER

    def _send_due(self, min: Any) -> float:  # noqa: A002
        remaining = []
        try:
            for entry in self.schedule.values():
                next_time_to_run = self.maybe_due(entry, **self._maybe_due_kwargs)
                if next_time_to_run:
                    remaining.append(next_time_to_run)
        except RuntimeError:
            log.debug("beat: RuntimeError", exc_info=True)
        return min(remaining + [self.max_interval])

    def _hold_lock(self) -> bool:
        """True while this beat holds the lock: extend it, or take it again when it lapsed and is free."""
        if self.lock is not None:
            try:
                # extend *to* the timeout (RedBeat's script on the lock it took at start, redis-py's own with
                # replace_ttl on one taken here: both set the TTL, neither adds to it)
                self.lock.extend(int(self.lock_timeout), replace_ttl=True)
                return True
            except LockError:
                beat_log.warning("beat: lost the lock (it lapsed while Redis was unreachable, or another beat "
                                 "took it); standing by")
                self.lock = None
        return self._try_acquire()

    def _try_acquire(self) -> bool:
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        if not lock.acquire(blocking=False):
            return False
        beat_log.info("beat: Acquired lock")
        self.lock = lock
        return True

    def _trouble(self, doing: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self._trouble_since is None:
            self._trouble_since = now
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            beat_log.warning("beat: Redis unreachable while %s (%s: %s); retrying every %.0fs", doing,
                             type(exc).__name__, exc, RETRY_AFTER)

    def _answered(self) -> None:
        if self._trouble_since is not None:
            beat_log.warning("beat: Redis answers again after %.1fs", time.monotonic() - self._trouble_since)
            self._trouble_since = None
            self._logged_at = -LOG_EVERY

    def _mode(self) -> dict[str, Any]:
        try:
            return modes.read(get_redis(self.app)) or {}
        except Exception:  # noqa: BLE001 - no mode known: schedule everything
            return {}

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        headers = entry.options.get("headers") or {}
        if headers.get("continuity_pass_node") and not self._pass_started(entry, headers):
            if advance:
                self.reserve(entry)
            return None
        tier = headers.get("continuity_tier")
        if should_skip(tier, self._mode()):
            log.info("beat: skipping %s (tier %s shed while degraded)", entry.name, tier)
            if advance:
                self.reserve(entry)
            return None
        if "due" in (entry.kwargs or {}):
            due_at = entry.due_at
            if due_at is not None:
                entry.kwargs = {**entry.kwargs, "due": maybe_make_aware(due_at).timestamp()}
        try:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        except Exception as exc:
            # celery wraps the broker's error in SchedulingError: a send that failed because Redis went away
            # is the outage ``tick`` already waits out (one warning line, not a traceback per entry); the entry
            # was advanced, so it goes out at its next due time
            if not _redis_trouble(exc):
                raise
            self._trouble(f"sending {entry.name}", exc)
            return None


    def _pass_started(self, entry: Any, headers: dict[str, Any]) -> bool:
        """A pass-driven entry (store-and-forward copy) fires once per pass of its node, at the pass's start
        (:func:`continuity.backup.scheduling.pass_to_start`); the task is told the pass and expires with it."""
        node, margin = headers["continuity_pass_node"], float(headers.get("continuity_pass_margin") or 0.0)
        if self._contact is None:
            self._contact = contact_schedules()
        last = entry.last_run_at
        last_ts = maybe_make_aware(last).timestamp() if last is not None else None
        every = headers.get("continuity_pass_every")
        p = pass_to_start(self._contact.get(node, Schedule()), last_ts, time.time(), margin,
                          float(every) if every else None)
        if p is None:
            return False
        entry.kwargs = {**(entry.kwargs or {}), "pass_start": p.start, "pass_end": p.end}
        entry.options = {**entry.options, "expires": max(1.0, p.end - margin - time.time())}
        return True


def _redis_trouble(exc: BaseException | None) -> bool:
    """True when ``exc`` or anything in its cause/context chain is a Redis connection problem."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, REDIS_TROUBLE):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def contact_schedules() -> dict[str, Schedule]:
    """Every node's contact as passes, from the blueprint beat was started with."""
    bp = load_blueprint(paths.blueprint_path())
    return {n: bp.contact_schedule(n) for n in bp.nodes}


def lock_timeout(takeover: float, poll: float) -> float:
    """The RedBeat lock's lifetime for a takeover within ``takeover`` seconds by a standby polling every ``poll``
    (never under two polls: the holder extends it every tick, at most ``poll`` apart)."""
    return max(2 * poll, takeover - poll)
