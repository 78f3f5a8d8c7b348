"""Work waiting in a node's queue: what an offline satellite will find when its pass starts, and when it expires.

A node's queue is a Redis list that Celery's Redis transport pushes on the left and its worker pops on the
right, one JSON message per task with the task's name, id, ``eta`` and ``expires`` in its headers. Status
peeks at the oldest few (those the node will run first) without taking them, so an operator sees that the
store-and-forward copy is waiting for the pass and until when it stays valid. Read for display only: nothing
here is acted on (a message is not trusted because it came from Redis).

Operation: :func:`peek` — ``LRANGE`` of the queue's tail (status does the same read inside its snapshot,
``state/fleet.py``); :func:`parse` — one message to :class:`Queued`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

SHOWN = 10  # oldest messages shown per node; the depth says how many more there are


@dataclass(frozen=True)
class Queued:
    task: str
    id: str
    args: str  # Celery's own repr of the arguments (``argsrepr``), as sent
    eta: float | None
    expires: float | None

    def as_dict(self, now: float) -> dict[str, Any]:
        out = asdict(self)
        out["expires_in"] = round(self.expires - now, 3) if self.expires is not None else None
        out["expired"] = self.expires is not None and self.expires <= now
        return out


def _time(value: object) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def parse(raw: str | bytes) -> Queued | None:
    """A queued Celery message, or None for anything that is not one (it is shown as unknown by the caller)."""
    try:
        msg = json.loads(raw)
    except (ValueError, TypeError):
        return None
    headers = msg.get("headers") if isinstance(msg, dict) else None
    if not isinstance(headers, dict) or not isinstance(headers.get("task"), str):
        return None
    return Queued(headers["task"], str(headers.get("id") or ""), str(headers.get("argsrepr") or ""),
                  _time(headers.get("eta")), _time(headers.get("expires")))


def peek(client: Any, queue: str, n: int = SHOWN) -> list[Queued | None]:
    """The ``n`` oldest messages of ``queue``, oldest (next to run) first, left in place."""
    return [parse(raw) for raw in reversed(client.lrange(queue, -n, -1))]
