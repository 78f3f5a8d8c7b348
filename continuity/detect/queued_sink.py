"""Pulse events written by a thread of their own, so that recording a decision never delays the next one.

The pulse history file is shared by every process that writes it on one host (``continuity up`` and the test
fleets run all nodes on one machine) and guarded by an exclusive file lock. A process stopped (SIGSTOP, a
debugger, swap) while it holds that lock blocks every other writer until it runs again: the detector's leader
once stood 28 s inside one ``emit``, its lease lapsed, and a stopped node was never declared dead. The detector's
events therefore go through this queue: the sweep puts them and goes on, one thread writes them in order.

Bounded: when the writer is stuck long enough for the queue to fill, further events are dropped (and counted, and
logged) rather than growing memory without end; the detector keeps deciding either way.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from continuity.events import EventKind, EventSink

log = logging.getLogger("continuity.detector")

_STOP = object()


class QueuedSink:
    """An :class:`~continuity.events.EventSink` that hands each event to ``sink`` from a thread of its own."""

    def __init__(self, sink: EventSink, maxsize: int = 10_000) -> None:
        self.sink = sink
        self.dropped = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name="continuity-detector-pulse", daemon=True)
        self._thread.start()

    def emit(self, kind: EventKind | str, **kwargs: Any) -> None:
        try:
            self._queue.put_nowait((kind, kwargs))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("detector: pulse writer stuck; %d event(s) dropped so far (latest %s)", self.dropped, kind)

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued (for up to ``timeout`` seconds) and stop; True when everything was written."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            kind, kwargs = item
            try:
                self.sink.emit(kind, **kwargs)
            except Exception as exc:  # noqa: BLE001 - one event lost, never the writer
                log.warning("detector: could not record %s: %s", kind, exc)
