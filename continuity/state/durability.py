"""Writes that must survive a Redis failover: confirmed by ``WAIT`` on the replicas before they count.

Redis replicates asynchronously. A fencing epoch bumped on the master and lost with it (a Sentinel promotes
a replica that was behind) comes back lower, and the next failover hands the same epoch out a second time:
two holders of one fencing token, which is exactly what the token exists to prevent. So every epoch write
— the bump, the first epoch of a service, a lease taken at an epoch — is sent in one pipeline with
``WAIT numreplicas timeout`` on the same connection, and raises :class:`Unconfirmed` when fewer replicas
than asked acknowledged it in time. The caller fails its step and retries; no one acts on an epoch (starts
a service with it) before the write that issued it is on the replicas a Sentinel could promote.

How many replicas: ``$CONTINUITY_EPOCH_REPLICAS`` if set, else every replica connected to the master right
now (``INFO replication``), so whichever one is promoted has the write. 0 (a single Redis, or one whose
``INFO`` is disabled — then set the variable) means no wait.
How long: ``$CONTINUITY_EPOCH_WAIT_MS``, capped below the client's socket timeout (a ``WAIT`` must not read
as a dead connection). A replica that is connected but stalled (paused, far behind) makes epoch writes fail
until it catches up or Redis drops it: failovers wait rather than risk a token that could be handed out twice.

Operations: :func:`replicas_to_confirm`, :func:`run_with_wait` (queued writes plus ``WAIT``, one connection),
:meth:`Confirmation.require`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from continuity import settings
from continuity.errors import ContinuityError


class Unconfirmed(ContinuityError):
    """An epoch write reached the master but not enough replicas in time: it could vanish in a failover."""

    def __init__(self, what: str, acked: int, wanted: int, timeout_ms: int) -> None:
        self.acked, self.wanted = acked, wanted
        super().__init__(f"{what}: {acked} of {wanted} replica(s) confirmed it within {timeout_ms} ms "
                         "(retried: an epoch is not used before it is on the replicas)")


def replicas_to_confirm(client: Any) -> int:
    """How many replicas must acknowledge an epoch write: the setting, else every connected replica."""
    wanted = settings.EPOCH_REPLICAS.get()
    if wanted is not None:
        return max(0, wanted)
    from redis.exceptions import ResponseError  # here: the pure deciders import the state modules without redis

    try:
        info = client.info("replication")
    except ResponseError:  # INFO renamed away (some managed Redis), or a test double: set the count explicitly
        return 0
    return int(info.get("connected_slaves", 0) or 0)


def wait_timeout_ms(client: Any) -> int:
    """``$CONTINUITY_EPOCH_WAIT_MS``, but under 80 % of the client's socket timeout."""
    wanted = settings.EPOCH_WAIT_MS.get()
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    sock = kwargs.get("socket_timeout")
    if sock:
        wanted = min(wanted, int(float(sock) * 800))
    return max(1, wanted)


@dataclass(frozen=True)
class Confirmation:
    """How many replicas acknowledged a batch of writes (``wanted`` 0: no replicas, nothing to wait for)."""

    wanted: int
    acked: int
    timeout_ms: int

    @property
    def ok(self) -> bool:
        return self.acked >= self.wanted

    def require(self, what: str) -> None:
        """Raise :class:`Unconfirmed` unless enough replicas acknowledged."""
        if not self.ok:
            raise Unconfirmed(what, self.acked, self.wanted, self.timeout_ms)


def run_with_wait(client: Any, queue: Callable[[Any], None]) -> tuple[list[Any], Confirmation]:
    """Queue writes with ``queue(pipe)``, send them followed by ``WAIT`` on one connection.

    Returns their results and the :class:`Confirmation`; the caller reads its own results first (a write its
    script refused needs no confirmation) and then calls :meth:`Confirmation.require`. Unconfirmed writes
    stay on the master: every caller's write is idempotent, so a retry re-sends it and waits again.
    """
    wanted = replicas_to_confirm(client)
    pipe = client.pipeline(transaction=False)
    queue(pipe)
    if not wanted:
        return list(pipe.execute()), Confirmation(0, 0, 0)
    timeout = wait_timeout_ms(client)
    pipe.execute_command("WAIT", wanted, timeout)
    *results, acked = pipe.execute()
    return results, Confirmation(wanted, int(acked), timeout)
