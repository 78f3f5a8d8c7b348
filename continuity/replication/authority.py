"""Who may send a service's data, and whether a standby may apply what it received: the lease, read with its TTL.

A standby must never apply data from a node that no longer holds the role
(DESIGN invariant 1): that node may have been fenced, and what it still sends
is a history the new primary does not have. Asking Redis for every frame would
put a Redis round trip on every replicated write and stop replication at every
Redis blip; instead each lease is read with its remaining time to live. A read
sent at monotonic time ``t`` that finds ``node`` holding the lease with ``pttl``
left proves that no other node can hold it before ``t + pttl`` (the lease
cannot be re-acquired by anyone else before it expires, and a promotion waits
for expiry plus a margin). Until ``t + pttl - margin`` a frame from ``node`` at
that epoch may be applied without asking again; after that it waits for a
fresher read. A Redis outage therefore pauses applying (TCP backpressure holds
the sender), never lets a stale primary through, and replication resumes by
itself when Redis answers again.

The same reading tells the primary's side whether it may still send: it stops
serving a stream as soon as its own lease is not confirmed.

:func:`judge` is the pure decision; :class:`LeaseWatch` its I/O shell, one
thread per replicator reading every lease it cares about in one round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from continuity.state import leases

log = logging.getLogger("continuity.replication")

UNCONFIRMED = "unconfirmed"  # not a refusal: wait for a fresher lease reading
NOT_HOLDER = "not-holder"
STALE_EPOCH = "stale-epoch"
BELOW_APPLIED = "below-applied"
REFUSALS = frozenset({NOT_HOLDER, STALE_EPOCH, BELOW_APPLIED})


@dataclass(frozen=True)
class LeaseView:
    """A lease as read: ``node`` (None: nobody holds it) at ``epoch``, proven until ``valid_until`` (monotonic)."""

    service: str
    node: str | None
    epoch: int
    read_at: float
    valid_until: float


def judge(sender: str, epoch: int, view: LeaseView | None, highest: int, now: float) -> str | None:
    """May data ``sender`` sent at ``epoch`` be applied (or sent) now? None when it may, else why not.

    ``highest`` is the highest epoch this copy has applied data of: an epoch below it is refused even if a
    Redis that lost its data were to say otherwise (fencing tokens only go up). ``UNCONFIRMED`` means "not
    yet": wait for a fresher lease reading; the other reasons end the session.
    """
    if view is None or now >= view.valid_until:
        return UNCONFIRMED
    if view.node != sender:
        return NOT_HOLDER
    if epoch < view.epoch:
        return STALE_EPOCH
    if epoch > view.epoch:
        return UNCONFIRMED  # our reading predates the sender's promotion: read again
    if epoch < highest:
        return BELOW_APPLIED
    return None


class LeaseWatch:
    """Reads the leases of ``services`` every ``period`` (one round trip); readers get the latest proven view."""

    def __init__(self, client: Any, services: Iterable[str], *, period: float = 0.25, margin: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.services = sorted(set(services))
        self.period = period
        self.margin = margin
        self.clock = clock
        self.views: dict[str, LeaseView] = {}
        self.cond = threading.Condition()
        self.ok = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """One reading of every lease; False when Redis could not be reached (the old views age out)."""
        sent = self.clock()
        try:
            found = leases.read_many(self.client, self.services)
        except Exception as exc:  # noqa: BLE001 - Redis blip: views expire by themselves, we try again
            if self.ok:
                log.warning("replication: cannot read leases: %s", exc)
            self.ok = False
            return False
        if not self.ok:
            log.warning("replication: leases readable again")
        self.ok = True
        with self.cond:
            for svc, lease in found.items():
                if lease is None:
                    self.views[svc] = LeaseView(svc, None, 0, sent, sent)
                else:
                    self.views[svc] = LeaseView(svc, lease.node, lease.epoch, sent, sent + lease.ttl - self.margin)
            self.cond.notify_all()
        return True

    def view(self, service: str) -> LeaseView | None:
        with self.cond:
            return self.views.get(service)

    def wait_newer(self, service: str, than: float, timeout: float) -> LeaseView | None:
        """Block until a reading of ``service`` newer than ``than`` (monotonic) exists, or ``timeout``."""
        deadline = self.clock() + timeout
        with self.cond:
            while True:
                v = self.views.get(service)
                if v is not None and v.read_at > than:
                    return v
                left = deadline - self.clock()
                if left <= 0 or self._stop.is_set():
                    return v
                self.cond.wait(left)

    def check(self, sender: str, epoch: int, service: str, highest: int = 0, timeout: float = 0.0) -> str | None:
        """:func:`judge` on the latest view; with ``timeout``, wait (for fresher readings) while unconfirmed."""
        deadline = self.clock() + timeout
        while True:
            view = self.view(service)
            why = judge(sender, epoch, view, highest, self.clock())
            if why != UNCONFIRMED or self.clock() >= deadline or self._stop.is_set():
                return why
            self.wait_newer(service, view.read_at if view else -1.0, max(0.0, deadline - self.clock()))

    def start(self) -> LeaseWatch:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="continuity-repl-leases", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self.cond:
            self.cond.notify_all()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.refresh()
