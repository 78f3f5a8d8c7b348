"""Per-service hook lanes: the node agent's start/stop/demote hooks run here, never on its heartbeat thread.

A start hook can take seconds (the issue measured 3.8 s for a promote start on a loaded
machine). Run on the beat thread, it stopped heartbeats and lease renewals; the watchdog
then self-demoted the role and the next beat reclaimed it, over and over. Run on whichever
thread decided it (beat, probe, watchdog), two hooks of one service could overlap: a local
restart and a demote 0.3 s apart left two instances of one service on one node.

So each service gets a *lane*: a FIFO of jobs and at most one thread draining it. Jobs of
one service run one after the other, in the order they were decided (a demote decided
while a start runs waits for that start, then stops what it started); jobs of different
services run side by side, so one slow service never delays another's demote. A lane's
thread exits when its queue is empty, so idle agents (and the many agents unit tests
build) hold no threads.

Every job has a deadline. The hook runner kills its subprocess at the hook timeout; the
lane waits that long plus ``grace`` and then gives up on a call that still has not
returned (a runner that ignores its own timeout), reports it through ``on_timeout`` and
goes on with the next job: a lane stuck forever would also block every later demote of
that service, and a primary that can never be stopped is worse than a stray hook.

I/O shell helper of :mod:`continuity.detect.agent`: threads only, no Redis, no hooks of its own.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("continuity.agent")

TIMED_OUT = object()  # what ``then`` receives when the call outlived its deadline


@dataclass
class Job:
    """One hook action: ``call`` runs under the deadline, ``then(result)`` does the bookkeeping after it.

    ``ready`` is checked on the lane just before ``call``: a start decided before a demote made it
    obsolete is dropped there, when the lane reaches it, not when it was queued.
    """

    service: str
    what: str
    call: Callable[[], Any]
    timeout: float
    then: Callable[[Any], None] = lambda result: None
    ready: Callable[[], bool] = lambda: True
    epoch: int | None = None  # for reports only


class HookLanes:
    """One serial lane per service; see the module docstring."""

    def __init__(self, on_timeout: Callable[[Job], None] | None = None, grace: float = 5.0,
                 name: str = "continuity-hook") -> None:
        self.on_timeout = on_timeout
        self.grace = grace
        self.name = name
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Job]] = {}
        self._busy: set[str] = set()  # services whose lane thread is running (draining its queue)

    def submit(self, job: Job) -> None:
        """Queue ``job`` behind every earlier job of its service; never blocks."""
        with self._cond:
            self._queues.setdefault(job.service, deque()).append(job)
            if job.service in self._busy:
                return
            self._busy.add(job.service)
        threading.Thread(target=self._drain, args=(job.service,), name=f"{self.name}-{job.service}",
                         daemon=True).start()

    def busy(self, service: str) -> bool:
        """True while a job of ``service`` is queued or running."""
        with self._cond:
            return service in self._busy

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every lane is empty (tests, worker shutdown); False if ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy, timeout)

    def _drain(self, service: str) -> None:
        while True:
            with self._cond:
                queue = self._queues.get(service)
                if not queue:
                    self._queues.pop(service, None)
                    self._busy.discard(service)
                    self._cond.notify_all()
                    return
                job = queue.popleft()
            try:
                self._run(job)
            except Exception:  # noqa: BLE001 - a bug in one job's bookkeeping must not end the lane
                log.exception("hook lane %s: %s failed", service, job.what)

    def _run(self, job: Job) -> None:
        if not job.ready():
            log.info("hook lane %s: %s dropped: no longer wanted", job.service, job.what)
            return
        job.then(self._call(job))

    def _call(self, job: Job) -> Any:
        """Run ``job.call`` on a helper thread and wait for it up to its deadline (the lane must outlive it)."""
        box: list[Any] = []
        done = threading.Event()

        def target() -> None:
            try:
                box.append(job.call())
            except Exception as exc:  # noqa: BLE001 - reported as the job's result, like a failed hook
                log.warning("hook lane %s: %s raised: %s", job.service, job.what, exc)
                box.append(None)
            finally:
                done.set()

        threading.Thread(target=target, name=f"{self.name}-{job.service}-call", daemon=True).start()
        if done.wait(job.timeout + self.grace):
            return box[0]
        log.error("hook lane %s: %s still running after %.1fs; going on without it", job.service, job.what,
                  job.timeout + self.grace)
        if self.on_timeout is not None:
            self.on_timeout(job)
        return TIMED_OUT
