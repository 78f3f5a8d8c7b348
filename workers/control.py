"""The failure detector as a worker bootstep: a hot standby in every worker that consumes ``continuity.control``.

The detector used to be a task beat sent every second; it stopped whenever beat did (a Redis blip, a beat
restart waiting out its lock), queued behind control steps in the pool, and filled Flower with a task a
second. Now it is :class:`continuity.detect.loop.DetectorLoop`, a thread in the worker's main process, beside
the consumer and outside the pool, from pool start to shutdown (as the node agent in ``workers/agent.py``).
Every control worker runs one; the leader lease in Redis picks the one that sweeps. This module only wires
the loop to the worker's lifecycle and injects what ``continuity.detect`` must not import: the failover
planner and launcher, the blueprint source (last good copy while an edit is broken) and Redis connections.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from continuity import settings
from continuity.detect.loop import DetectorLoop, identity
from continuity.detect.queued_sink import QueuedSink
from continuity.failover.planner import plan_failovers
from continuity.pulse import Pulse
from continuity.redisd import connect
from workers.app import CONTROL_QUEUE, app
from workers.failover import launch_failovers
from workers.task import blueprint

log = logging.getLogger("continuity.detector")


def detector_client(lease: float) -> Any:
    """A client that fails within the lease and never retries on its own: the loop decides what a failure means
    (step down, grace) and reconnects on its next tick."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return connect(socket_timeout=lease, socket_connect_timeout=lease, retry=Retry(NoBackoff(), 0),
                   retry_on_timeout=False, health_check_interval=0)


def build_loop() -> DetectorLoop:
    node = settings.NODE.get()
    lease = settings.DETECTOR_LEASE.get()

    def client() -> Any:
        return detector_client(lease)

    # events through a queue: a process stopped while holding the pulse file's lock must not stop detection
    return DetectorLoop(client, blueprint, identity(node), pulse=QueuedSink(Pulse(client=client(), node=node)),
                        launch=launch_failovers, plan=plan_failovers, lease_ttl=lease)


def consumes_control(worker: Any) -> bool:
    """Whether this worker consumes the control queue (``continuity worker`` adds it for core nodes)."""
    try:
        return CONTROL_QUEUE in worker.app.amqp.queues.consume_from
    except Exception:  # noqa: BLE001 - unknown queue setup: do not start a detector nobody asked for
        return False


class DetectorStep(bootsteps.StartStopStep):
    """The detector loop of a control worker: started with the pool, stopped (lease handed back) at shutdown."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.loop: DetectorLoop | None = None

    def start(self, worker: Any) -> None:
        if not settings.DETECTOR.get() or not consumes_control(worker):
            return
        try:
            self.loop = build_loop().start()
        except Exception:  # noqa: BLE001 - the other control workers still detect; this one is visible in logs
            log.exception("the detector loop could not start")
            return
        log.info("detector loop started (%s)", self.loop.me.id)

    def stop(self, worker: Any) -> None:
        loop, self.loop = self.loop, None
        if loop is not None:
            loop.stop()
            if isinstance(loop.pulse, QueuedSink):
                loop.pulse.close()  # the last events (leader_resigned) reach the history before the exit

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)


app.steps["worker"].add(DetectorStep)
