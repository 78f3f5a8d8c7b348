"""Failover step markers: what makes each chain step's effect happen once per (service, epoch, step).

Keys, all under ``failover:step:<service>:<epoch>:<step>``: the marker itself (JSON detail of the done effect, no
TTL: a redelivery years later is still a no-op), ``…:failed`` (the step failed and its failure was acted on: a late
copy must do nothing), ``…:lock`` (the running copy's :mod:`continuity.state.locks` lock) and ``…:resent`` (the
watchdog resent the chain from this step; expires after one stall window).

Operations and their guarantees:

- :func:`held` — the step's lock: one copy runs at a time, a copy killed with its worker frees it within its TTL.
- :func:`done` / :func:`mark_done` — read / write the marker (the fence writes it itself, inside its epoch bump
  script, so bump and marker are one atomic step: :func:`key` gives it the name).
- :func:`failed` / :func:`mark_failed`, :func:`busy` (locked or failed, one ``EXISTS``), :func:`claim_resend`
  (``SET NX PX``: of two watchdogs exactly one resends).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from continuity.state import keys, locks


def key(service: str, epoch: int, step: str) -> str:
    return keys.step_done(service, int(epoch), step)


@contextmanager
def held(client: Any, service: str, epoch: int, step: str, ttl: float = 3.0, wait: float = 120.0) -> Iterator[None]:
    with locks.held(client, key(service, epoch, step) + ":lock", ttl=ttl, wait=wait):
        yield


def done(client: Any, service: str, epoch: int, step: str) -> dict[str, Any] | None:
    """The recorded detail of a done step ({} when unreadable), None when it is not done."""
    raw = client.get(key(service, epoch, step))
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def mark_done(client: Any, service: str, epoch: int, step: str, detail: Mapping[str, Any]) -> None:
    client.set(key(service, epoch, step), json.dumps(dict(detail), default=str))


def failed(client: Any, service: str, epoch: int, step: str) -> bool:
    return bool(client.exists(key(service, epoch, step) + ":failed"))


def mark_failed(client: Any, service: str, epoch: int, step: str, reason: str) -> None:
    client.set(key(service, epoch, step) + ":failed", reason[:500])


def busy(client: Any, service: str, epoch: int, step: str) -> bool:
    """Running right now (its lock is held) or failed and already handled."""
    k = key(service, epoch, step)
    return bool(client.exists(k + ":lock", k + ":failed"))


def claim_resend(client: Any, service: str, epoch: int, step: str, now: float, window: float) -> bool:
    return bool(client.set(key(service, epoch, step) + ":resent", f"{now:.3f}", nx=True,
                           px=max(1, int(window * 1000))))
