"""Postmortem action items as Redis holds them: ``postmortem-actions``, a hash ``<item>#<n>`` -> statement JSON.

Redis is only where the signed statements wait (:mod:`continuity.actions` verifies every one on every read).
The n-th statement of an item goes in field ``<item>#<n>`` with ``HSETNX``: two operators closing the same item
at once cannot both write step n (one of them is told to read again), and an item id cannot be added twice.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from continuity.state import keys


def append(client: Any, item: str, index: int, statement: str) -> bool:
    """Store ``statement`` as step ``index`` of ``item``; False when that step is already taken."""
    return bool(client.hsetnx(keys.postmortem_actions(), f"{item}#{int(index)}", statement))


def read_all(client: Any) -> dict[str, list[str]]:
    """Every item's raw statements, in step order (unparsed: verifying is the reader's job)."""
    steps: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for f, v in client.hgetall(keys.postmortem_actions()).items():
        f = f.decode() if isinstance(f, bytes) else str(f)
        item, _, n = f.rpartition("#")
        if not item or not n.isdigit():
            continue
        steps[item].append((int(n), v.decode() if isinstance(v, bytes) else str(v)))
    return {item: [v for _n, v in sorted(s)] for item, s in steps.items()}


def read(client: Any, item: str) -> list[str]:
    return read_all(client).get(item, [])
