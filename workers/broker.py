"""A work-around in the broker client (kombu's Redis transport) for a fault the fleet must survive.

A Redis restart while a worker holds an unacknowledged message (an ``acks_late`` task running) ended the worker,
two ways. On the connection loss Celery closes the old connection; closing its channel restores the
unacknowledged messages through a Redis client the channel can no longer build (its transport has already let go
of the connection: ``conninfo.hostname`` read from None). Or the task finishes after the reconnection and is
acknowledged (or rejected) on its old, closed channel: same failure (``.client`` read from None). An
AttributeError is not among the errors Celery ignores there: the worker logged "Unrecoverable error" and exited,
its node went silent, and the detector failed a healthy node over.

The message is still in Redis's unacked hash, from which the transport puts it back after the visibility
timeout (a redelivery is a no-op: task effects are keyed), so when the channel cannot even build its client the
restore / ack / reject is skipped with a warning instead of taking the worker down. Any other error is raised as
before.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger("continuity.broker")

_MARK = "_continuity_survives_torn_down_connection"


PATCHED = ("restore_unacked", "ack", "reject")


def install() -> None:
    """Patch ``restore_unacked``, ``ack`` and ``reject`` of ``kombu.transport.redis.QoS`` once (idempotent)."""
    qos = kombu_redis.QoS
    for name in PATCHED:
        method = getattr(qos, name)
        if not getattr(method, _MARK, False):
            setattr(qos, name, _tolerant(name, method))


def _tolerant(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def tolerant(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except AttributeError as exc:
            log.warning("broker connection already torn down: %s skipped, the message comes back after the "
                        "visibility timeout (%s)", name, exc)
            return None

    setattr(tolerant, _MARK, True)
    return tolerant
