"""The test bed of separate hosts: each node in its own network namespace, with its own address and data root.

Why it exists: on one machine every node can read every other node's files,
so a failover that quietly copies a dead node's data, or a client that talks
to loopback, passes every test and fails on real hosts. On the bed a node
reaches Redis and the other nodes only over the network, a node loss takes
its disk with it, and any open of another node's root is refused and fails
the suite (:mod:`continuity.netbed.guard`).

- :mod:`continuity.netbed.net` — namespaces, bridge, veth pairs, the subnet choice, processes by namespace;
- :mod:`continuity.netbed.guard` — the disk guard (fanotify) and its violations;
- :mod:`continuity.netbed.procs` — a node's processes by namespace: freeze, kill;
- :mod:`continuity.netbed.registry` — the record of every bed, :func:`leftovers`, and :func:`sweep_stale` for beds
  whose owner died;
- :mod:`continuity.netbed.bed` — :class:`Bed`: the hosts of a blueprint, Redis on the bridge, workers,
  node loss, partition, revival, teardown.

Linux and root only (CI runs as root); :func:`unavailable` says why not, for a skip message.
See docs/continuity/testbed.md.
"""

from __future__ import annotations

from continuity.netbed import guard, net
from continuity.netbed.bed import Bed, Host, IsolationBroken, Loss
from continuity.netbed.guard import Violation
from continuity.netbed.net import NetError
from continuity.netbed.registry import leftovers, sweep_stale

__all__ = ["Bed", "Host", "IsolationBroken", "Loss", "NetError", "Violation", "leftovers", "sweep_stale",
           "unavailable"]


def unavailable(need_guard: bool = True) -> str | None:
    """Why a bed cannot run on this machine, or None when it can."""
    return net.unavailable() or (guard.supported() if need_guard else None)
