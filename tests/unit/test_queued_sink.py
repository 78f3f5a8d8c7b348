"""The detector's events go through a queue: a writer stuck on the pulse file's lock never holds a sweep up."""

from __future__ import annotations

import threading
import time
from typing import Any

from continuity.detect.queued_sink import QueuedSink
from tests.helpers import wait_for


class StuckSink:
    """A pulse writer that cannot write until ``release`` is set (another process holds the file lock)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, **kw: Any) -> None:
        self.release.wait(30)
        if kw.get("data", {}).get("boom"):
            raise OSError("disk full")
        self.written.append((kind, kw))


def test_emit_returns_at_once_and_events_are_written_in_order_later() -> None:
    stuck = StuckSink()
    sink = QueuedSink(stuck)
    t0 = time.monotonic()
    for i in range(50):
        sink.emit("detect.node_alive", node=f"n{i}")
    assert time.monotonic() - t0 < 1.0, "the caller never waits for the writer"
    assert stuck.written == []
    stuck.release.set()
    wait_for(lambda: len(stuck.written) == 50, timeout=10, what="the queued events")
    assert [kw["node"] for _, kw in stuck.written] == [f"n{i}" for i in range(50)]
    assert sink.close()


def test_a_failing_write_loses_one_event_not_the_writer() -> None:
    stuck = StuckSink()
    stuck.release.set()
    sink = QueuedSink(stuck)
    sink.emit("detect.tilt", data={"boom": True})
    sink.emit("detect.tilt_ended", data={"at": 1.0})
    assert sink.close()
    assert [k for k, _ in stuck.written] == ["detect.tilt_ended"]


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    stuck = StuckSink()
    sink = QueuedSink(stuck, maxsize=3)
    for i in range(10):
        sink.emit("detect.node_alive", node=f"n{i}")
    assert 5 <= sink.dropped <= 7  # the writer may already hold one event
    assert not sink.close(timeout=0.2), "still stuck: close says not everything was written"
    stuck.release.set()
