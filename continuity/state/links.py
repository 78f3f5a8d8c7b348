"""Drill link faults: what a node's Redis-link proxy must apply, and what it reports back.

``drill:link:<node>:fault`` (JSON :class:`LinkFault`) is written by the drill with a TTL equal to the fault's hold
time: the TTL is a dead-man switch, so a drill runner that dies mid-fault cannot leave a node cut off.
``drill:link:<node>`` (hash, 10 s TTL refreshed by the proxy) is the proxy's live status: listen and upstream
addresses, the fault it applies now, counters. Its existence is how a drill knows the proxy runs.

Operations and their guarantees: :func:`set_fault` (``SET PX``), :func:`clear_fault` (``DEL``),
:func:`read_status` / :func:`has_proxy` (plain reads); the proxy's side, on an asyncio client:
:func:`pull_fault` and :func:`push_status` (``HSET`` + ``EXPIRE`` in one pipeline).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from continuity.state import keys

STATUS_TTL = 10


@dataclass(frozen=True)
class LinkFault:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    drop: bool = False

    @classmethod
    def parse(cls, raw: Any) -> LinkFault:
        """Never raises: an absent or unreadable fault is no fault."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(float(data.get("delay_ms", 0)), float(data.get("jitter_ms", 0)), bool(data.get("drop", False)))
        except (ValueError, TypeError, AttributeError):
            return cls()

    def active(self) -> bool:
        return self.drop or self.delay_ms > 0 or self.jitter_ms > 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def set_fault(client: Any, node: str, fault: Mapping[str, Any], ttl_ms: int) -> None:
    client.set(keys.drill_link_fault(node), json.dumps(dict(fault)), px=max(1, int(ttl_ms)))


def clear_fault(client: Any, node: str) -> None:
    client.delete(keys.drill_link_fault(node))


def has_proxy(client: Any, node: str) -> bool:
    return bool(client.exists(keys.drill_link(node)))


def read_status(client: Any, node: str) -> dict[str, str]:
    return dict(client.hgetall(keys.drill_link(node)))


def applies(status: Mapping[str, Any], fault: Mapping[str, Any]) -> bool:
    """Whether a proxy status shows ``fault`` applied (drop and delay as asked)."""
    return (int(status.get("drop", 0)) == int(bool(fault.get("drop")))
            and float(status.get("delay_ms", 0)) == float(fault.get("delay_ms", 0)))


async def pull_fault(aclient: Any, node: str) -> LinkFault:
    return LinkFault.parse(await aclient.get(keys.drill_link_fault(node)))


async def push_status(aclient: Any, node: str, status: Mapping[str, Any]) -> None:
    pipe = aclient.pipeline()
    pipe.hset(keys.drill_link(node), mapping={k: str(v) for k, v in status.items()})
    pipe.expire(keys.drill_link(node), STATUS_TTL)
    await pipe.execute()
