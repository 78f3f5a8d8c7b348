"""The replay cache of signed control-plane messages: one key per signature, ``running`` then ``done``.

A signed task message (:mod:`continuity.task_auth`) stays valid until its expiry, so a copy captured off the
broker could be pushed again and run again: a second switchover, a second drill. Each message's signature is
unique (it covers the task id and the time it was issued; a Celery retry is re-signed), so the worker claims
the signature before running the task and marks it ``done`` after; a copy whose signature is ``done`` is a
replay and is refused. A copy that finds it ``running`` is the broker redelivering a message whose worker died
mid-task (late acks): that one runs, as it always did, and the step's own idempotence and lock handle it.

``task-seen:<digest>`` lives until the envelope's expiry (plus the clock skew allowed): after that the
envelope check refuses the message anyway, so the key has nothing left to remember. Whoever can write to
Redis can delete the key, but a replay needs the original signed message too, and the key only ever makes a
message run *less*: it never lets a message run that the signature check refused.

Operations: :func:`claim` (one ``SET NX PX``, else a ``GET``: ``new``, ``running`` or ``done``), :func:`finish`
(``SET XX KEEPTTL``: only a claimed message is marked, and it keeps its expiry).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from continuity.state import keys

RUNNING, DONE = "running", "done"
Claim = Literal["new", "running", "done"]


def digest(signature: str) -> str:
    return hashlib.sha256(signature.encode()).hexdigest()[:32]


def claim(client: Any, signature: str, ttl: float) -> Claim:
    """``new`` if this is the first delivery of the message signed ``signature``; else what the first left."""
    key = keys.task_seen(digest(signature))
    if client.set(key, RUNNING, nx=True, px=max(1000, int(ttl * 1000))):
        return "new"
    value = client.get(key)
    return DONE if value in (DONE, DONE.encode()) else RUNNING


def finish(client: Any, signature: str) -> None:
    client.set(keys.task_seen(digest(signature)), DONE, xx=True, keepttl=True)
