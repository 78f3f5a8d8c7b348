"""The detector as a long-running loop: one thread in every control worker, one leader sweeping at a time.

Why a loop and not a task sent by beat every second: the detector must outlive the faults it is there to see.
A beat task stops with beat (celery beat exits on a Redis blip, and a restarted beat waits out its predecessor's
lock: 31-35 s without a sweep), queues behind control steps that fill the worker's pool slots (13.9 s without a
sweep during a failover), and floods Flower's task list with one task a second. This loop is a thread of its
own in each worker that consumes the control queue (started by the worker bootstep in ``workers/control.py``),
so every control worker is a hot standby:

* **Leader lease** (:mod:`continuity.state.detector_leader`, about 1.5 s on Redis's clock). The holder renews it
  a few times per lease and with every sweep's write, and stops sweeping the moment a renewal fails; standbys
  poll a few times per lease and take it as soon as it lapses, so a killed leader is replaced within the TTL
  plus one poll. A sweep's results are written only while the lease is still the writer's.
* **Never dies on Redis.** Every Redis call has a short socket timeout and no hidden retries; an error is
  logged once per outage, the leader steps down, and the next tick tries again on a fresh connection.
* **Measures its own watch** (:class:`~continuity.detect.detector.View`), on its monotonic clock: the time
  since its own previous sweep (TILT: the detector's own pauses, never another worker's round trips) and how
  long Redis has answered it without a failure (the grace after a gap in the view: a Redis restart, a new
  leader that was not watching through the gap). The decisions themselves are the pure detector's.
* **Ingest** runs in the leader only (:class:`~continuity.detect.sweep.IngestLoop`), started on election,
  stopped on step-down.

No Celery here: the worker's bootstep builds the loop and injects the failover planner and launcher (as the
old task did), the blueprint source, the Redis connection factory and the pulse sink, which it wraps in a
:class:`~continuity.detect.queued_sink.QueuedSink` (a process stopped while holding the pulse file's lock must not
hold a sweep up).
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from continuity.blueprint import Blueprint
from continuity.detect import detector
from continuity.detect.sweep import (
    LOST_LEASE,
    IngestLoop,
    Launcher,
    Leadership,
    Planner,
    SweepCache,
    SweepResult,
    run_sweep,
)
from continuity.events import DETECT_LEADER_ELECTED, DETECT_LEADER_RESIGNED, EventKind, EventSink
from continuity.state import detector_leader
from continuity.state.detector_leader import Identity

log = logging.getLogger("continuity.detector")

DEFAULT_LEASE = 1.5
LOG_EVERY = 30.0  # seconds between repeated log lines of one ongoing failure
COLLECT_EVERY = 60  # sweeps between full garbage collections (see DetectorLoop._tidy)


def identity(node: str | None) -> Identity:
    """This process as a lease holder: a fresh random id (a restarted worker is a new holder) plus where it runs."""
    host, pid = socket.gethostname(), os.getpid()
    return Identity(id=f"{node or '-'}@{host}:{pid}:{secrets.token_hex(4)}", node=node or "", host=host, pid=pid)


def _is_redis_error(exc: BaseException) -> bool:
    """A failure to talk to Redis (connection, timeout, a server refusing writes), not a bug of ours."""
    return isinstance(exc, RedisError | OSError)


@dataclass
class Stats:
    """What the loop did, for a benchmark or a test to read (never needed for correctness)."""

    sweeps: int = 0
    elected: int = 0
    stepped_down: int = 0
    redis_failures: int = 0
    last: SweepResult | None = None


class DetectorLoop:
    """The detector loop of one control worker (see the module docstring).

    ``connect`` returns a new Redis client (short timeouts, no retries); it is called for the loop's own
    connection and for the ingest thread's. ``blueprint`` is called every tick (an edited blueprint takes effect
    at once; the shell's source keeps the last good one). ``clock`` is monotonic time (tests move it by hand
    and call :meth:`step` directly instead of :meth:`start`).
    """

    def __init__(self, connect: Callable[[], Any], blueprint: Callable[[], Blueprint], me: Identity, *,
                 pulse: EventSink | None = None, launch: Launcher | None = None, plan: Planner | None = None,
                 lease_ttl: float = DEFAULT_LEASE, ingest: bool = True, keyring: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connect, self.blueprint, self.me = connect, blueprint, me
        self.pulse, self.launch, self.plan = pulse, launch, plan
        self.ttl = lease_ttl
        self.with_ingest = ingest
        self.keyring = keyring
        self._chains: dict[str, Any] = {}
        self._last_raw: dict[str, bytes] = {}
        self.clock = clock
        self.client: Any = None
        self.stats = Stats()
        self.leading = False
        self.term = 0
        self.previous: str | None = None  # the other holder we last saw
        self.watch_since: float | None = None  # first answer from Redis since the start or the last failure
        self.lost_redis = False
        self.last_sweep: float | None = None  # monotonic time of our previous sweep in this term
        self.next_sweep = 0.0
        self.cache = SweepCache()
        self._ingest: IngestLoop | None = None
        self._failing_since: float | None = None
        self._logged_at = -LOG_EVERY
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sweeps_since_collect = 0

    # --- timing --------------------------------------------------------------------------------------------------
    def renew_every(self, bp: Blueprint) -> float:
        """The leader's tick: a third of the lease (a late tick or two still renews in time), at most a sweep."""
        return max(0.02, min(bp.policy.heartbeat_interval, self.ttl / 3))

    def poll_every(self) -> float:
        """A standby's tick: a sixth of the lease, so a lapsed lease is taken within the TTL plus this."""
        return max(0.02, self.ttl / 6)

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> DetectorLoop:
        self._thread = threading.Thread(target=self._run, name="continuity-detector", daemon=True)
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; a leader hands the lease back at once, so a standby need not wait for the TTL."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.leading:
            self._step_down("worker shutting down")
            try:
                detector_leader.release(self._client(), self.me)
            except Exception as exc:  # noqa: BLE001 - the lease lapses by itself within its TTL
                log.warning("detector: could not hand the lease back (%s); it lapses within %.1fs", exc, self.ttl)

    def _run(self) -> None:
        delay = 0.0
        failed_at = -LOG_EVERY
        while not self._stop.wait(delay):
            try:
                delay = self.step()
            except Exception:  # noqa: BLE001 - a bug in one tick must not end detection; logged, then retried
                now = self.clock()
                if now - failed_at >= LOG_EVERY:  # the same failure every tick must not flood the log
                    failed_at = now
                    log.exception("detector: tick failed (retrying every %.2fs)", self.poll_every())
                # a leader keeps its lease (stepping down and back every tick would flood the pulse with
                # elections); its sweep is retried at the next tick
                delay = self.poll_every()

    # --- one tick ------------------------------------------------------------------------------------------------
    def step(self) -> float:
        """Claim (or renew) the lease and sweep when one is due; returns how long to wait before the next tick."""
        t = self.clock()
        bp = self.blueprint()
        try:
            claim = detector_leader.claim(self._client(), self.me, self.ttl)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            self._redis_failed(t, exc)
            return self.poll_every()
        self._redis_answered(t)
        if not claim.leading:
            self.previous = claim.holder
            if self.leading:
                self._step_down("another process holds the lease")
            return self.poll_every()
        if not self.leading or claim.term != self.term:
            self._elect(claim, bp)
        if self.clock() >= self.next_sweep:
            return self._sweep(bp)
        return max(0.0, min(self.next_sweep, t + self.renew_every(bp)) - self.clock())

    def _sweep(self, bp: Blueprint) -> float:
        t = self.clock()
        view = detector.View(own_gap=None if self.last_sweep is None else t - self.last_sweep,
                             watched=t - (self.watch_since if self.watch_since is not None else t),
                             lost_redis=self.lost_redis, new_term=self.last_sweep is None)
        lead = Leadership(self.me.id, self.me.node, self.term, self.ttl)
        try:
            res = run_sweep(self._client(), bp, lead, view=view, cache=self.cache, pulse=self.pulse,
                            launch=self.launch, plan=self.plan)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            self._redis_failed(self.clock(), exc)
            return self.poll_every()
        if res.skipped == LOST_LEASE:
            self._step_down("lost the lease before writing (stalled past it)")
            return self.poll_every()
        self.stats.sweeps += 1
        self.stats.last = res
        self.last_sweep = t
        self._tidy()
        interval = bp.policy.heartbeat_interval
        self.next_sweep = t + interval
        now = self.clock()
        return max(0.0, min(self.next_sweep, now + self.renew_every(bp)) - now)

    def _tidy(self) -> None:
        """Garbage collection on the detector's terms, right after a sweep (the next one is a heartbeat away).

        The sweep and the ingest slices run with the collector off, but the process's other threads allocate
        too, and a collection they trigger holds the GIL while it scans every object the sweep cache keeps
        (10,000 nodes' chains and beats: tens of milliseconds, the sweep's p99). So the survivors are frozen
        after each sweep (:func:`gc.freeze`: never scanned again; acyclic garbage among them is still freed by
        reference counting), and once every ``COLLECT_EVERY`` sweeps they are thawed and collected in full, here,
        so cyclic garbage lives at most that long."""
        self._sweeps_since_collect += 1
        if self._sweeps_since_collect >= COLLECT_EVERY:
            self._sweeps_since_collect = 0
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    # --- transitions ---------------------------------------------------------------------------------------------
    def _elect(self, claim: detector_leader.Claim, bp: Blueprint) -> None:
        if self.leading:
            self._step_down("the lease changed terms under us")
        self.leading, self.term = True, claim.term
        self.last_sweep = None
        self.next_sweep = self.clock()
        # what this process verified of the nodes' signed statements outlives a term: a re-elected leader does not
        # verify 10,000 Ed25519 signatures again before its first sweep can finish
        self.cache = SweepCache(keyring=self.keyring) if self.keyring is not None else SweepCache()
        self.cache.chains, self.cache.last_raw = self._chains, self._last_raw
        self.stats.elected += 1
        log.warning("detector: leading (term %d, %s)", claim.term, self.me.id)
        self._emit(DETECT_LEADER_ELECTED, {"pid": self.me.pid, "host": self.me.host, "term": claim.term,
                                           "previous": self.previous, "at": claim.now})
        if self.with_ingest:
            self._ingest = IngestLoop(self.connect(), self.blueprint, self.cache, IngestLoop.interval_for(bp),
                                      sweep_due_in=lambda: self.next_sweep - self.clock()).start()

    def _step_down(self, reason: str) -> None:
        if not self.leading:
            return
        self.leading = False
        self.last_sweep = None
        self.stats.stepped_down += 1
        ingest, self._ingest = self._ingest, None
        if ingest is not None:
            ingest.stop()
        self.cache.generation = ""  # never drain the pending hash with this memory again
        log.warning("detector: no longer leading (term %d): %s", self.term, reason)
        self._emit(DETECT_LEADER_RESIGNED, {"pid": self.me.pid, "term": self.term, "reason": reason})

    def _redis_failed(self, t: float, exc: BaseException) -> None:
        self.stats.redis_failures += 1
        self.watch_since = None
        self.lost_redis = True
        if self._failing_since is None:
            self._failing_since = t
        if t - self._logged_at >= LOG_EVERY:
            self._logged_at = t
            log.warning("detector: Redis unreachable (%s: %s); retrying", type(exc).__name__, exc)
        self._step_down(f"Redis unreachable: {type(exc).__name__}")
        client, self.client = self.client, None  # a fresh connection next time (never a half-read reply)
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass

    def _redis_answered(self, t: float) -> None:
        if self.watch_since is None:
            self.watch_since = t
        if self._failing_since is not None:
            log.warning("detector: Redis answers again after %.1fs", t - self._failing_since)
            self._failing_since = None
            self._logged_at = -LOG_EVERY

    def _client(self) -> Any:
        if self.client is None:
            self.client = self.connect()
        return self.client

    def _emit(self, kind: EventKind, data: dict[str, Any]) -> None:
        if self.pulse is None:
            return
        try:
            self.pulse.emit(kind, node=self.me.node or None, data=data)
        except Exception as exc:  # noqa: BLE001 - losing an event must not stop detection
            log.warning("detector: could not record %s: %s", kind, exc)
