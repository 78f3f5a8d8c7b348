"""What every part of one node's replicator shares: the blueprint, the node keys, the lease watch, its events,
where its replicas keep their highest applied epoch, and the timings of the wire.

Highest applied epoch: a standby refuses data of an epoch lower than any it
has applied (fencing tokens only go up, even if Redis lost its data and hands
an old lease back), and never cuts its history for a primary of that same epoch
(one primary per epoch, and it only appends: less means it lost data). It is kept
per service in the node's own service directory, ``.replica/state.json`` (temp
file, fsync, rename), raised after any cut and before the first frame of a higher
epoch is applied.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuity.backup.storage.local import fsync_dir
from continuity.blueprint import Blueprint, DataSource
from continuity.events import EventKind, EventSink
from continuity.replication.authority import LeaseWatch
from continuity.replication.streams import RoundStream
from continuity.replication.wire import WireError
from continuity.services.hooks import HookError
from continuity.services.layout import service_dir
from continuity.state.heartbeats import SecretRing as KeyRing

log = logging.getLogger("continuity.replication")

THROTTLE = 60.0  # seconds between two events of one throttled kind, peer and reason


def source_name(ds: DataSource) -> str:
    """How a declared source is named on the wire and in Redis: its file (or directory) name, which is also
    where it lives in the service's directory on every node (``services/layout.py``)."""
    return Path(ds.path).name


def replicated(bp: Blueprint, service: str) -> bool:
    """Does ``service`` have anything to replicate (declared data, standbys, a mode other than off)?"""
    sv = bp.services[service]
    return bool(sv.spec.data) and bool(sv.standbys) and sv.replication.mode != "off"


def replication_port(bp: Blueprint, node: str) -> int:
    """The node's replicator port: ``policy.replication.port`` shifted by the node's ``port_offset`` (simulated
    nodes share one host), the rule :func:`continuity.services.hooks.service_port` applies to service ports."""
    offset = bp.nodes[node].labels.get("port_offset", "0")
    try:
        return bp.policy.replication.port + int(offset)
    except ValueError:
        raise HookError(f"node {node!r}: label port_offset={offset!r} is not an integer") from None


@dataclass
class Context:
    bp: Blueprint
    node: str
    keyring: KeyRing
    leases: LeaseWatch
    pulse: EventSink | None = None
    poll: float = 0.02  # a sender looks for appends this often when no sync write woke it
    idle: float = 1.0  # a quiet link carries a keepalive this often, both ways
    timeout: float = 5.0  # a link silent this long is dead (socket timeout)
    lease_wait: float = 5.0  # a frame waits this long for a lease reading that confirms its sender
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    stopping: threading.Event = field(default_factory=threading.Event)
    rounds: dict[tuple[str, str], RoundStream] = field(default_factory=dict)  # sources replicated in rounds
    _emitted: dict[tuple[str, ...], float] = field(default_factory=dict)
    _highest: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)  # service -> (epoch, per source)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def encrypt(self) -> bool:
        return self.bp.policy.replication.encrypt

    def key(self, node: str) -> bytes:
        """A node's key (its own or a peer's); WireError('unknown-node') when this node has none for it."""
        if node not in self.bp.nodes:
            raise WireError("unknown-node", f"{node!r} is not a node of the blueprint")
        key = self.keyring.get(node)
        if not key:
            raise WireError("unknown-node", f"no node key for {node!r} on {self.node}")
        return key

    def endpoint(self, node: str) -> tuple[str, int]:
        return self.bp.nodes[node].address, replication_port(self.bp, node)

    def placement(self, service: str) -> tuple[str, ...]:
        sv = self.bp.services[service]
        return (sv.primary, *sv.standbys)

    def source(self, service: str, name: str) -> DataSource | None:
        sv = self.bp.services.get(service)
        if sv is None:
            return None
        return next((ds for ds in sv.spec.data if source_name(ds) == name), None)

    def path(self, service: str, ds: DataSource) -> Path:
        return service_dir(self.node, service) / source_name(ds)

    def round_stream(self, service: str, source: str) -> RoundStream:
        with self._lock:
            key = (service, source)
            if key not in self.rounds:
                self.rounds[key] = RoundStream(service, source, clock=self.clock)
            return self.rounds[key]

    # --- highest applied epoch --------------------------------------------------------------------------------
    def _state_file(self, service: str) -> Path:
        return service_dir(self.node, service) / ".replica" / "state.json"

    def highest(self, service: str, source: str | None = None) -> int:
        """The highest epoch this node applied data of: of the service (any source), or of one ``source``.

        Per source too: a service's sources follow the new primary in separate sessions, and one of them (its
        SQLite image, say) applying epoch 2 says nothing about the others. A ledger copy still holding the old
        primary's tail must judge the new primary against its own history, or it takes the new primary for
        one that lost data and refuses it for good. (Read from disk once, then kept: only we write it.)"""
        with self._lock:
            if service not in self._highest:
                self._highest[service] = self._read_highest(service)
            epoch, sources = self._highest[service]
            if source is None:
                return epoch
            # a state written before sources were recorded: the service's epoch, the cautious reading
            return sources.get(source, epoch if not sources else 0)

    def _read_highest(self, service: str) -> tuple[int, dict[str, int]]:
        try:
            doc = json.loads(self._state_file(service).read_text())
            value, sources = doc.get("epoch", 0), doc.get("sources", {})
            epoch = value if isinstance(value, int) else 0
            return epoch, ({k: v for k, v in sources.items() if isinstance(k, str) and isinstance(v, int)}
                           if isinstance(sources, dict) else {})
        except (OSError, ValueError, AttributeError):
            return 0, {}

    def raise_highest(self, service: str, epoch: int, primary: str, source: str) -> None:
        """Persist ``epoch`` as the highest applied of ``source`` (and of the service), only ever upwards,
        durably, before its data is applied."""
        if epoch <= self.highest(service, source) and epoch <= self.highest(service):
            return
        with self._lock:
            current, sources = self._highest[service]
            sources = {**sources, source: max(epoch, sources.get(source, 0))}
            current = max(current, epoch)
            path = self._state_file(service)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w") as fh:
                fh.write(json.dumps({"epoch": current, "primary": primary, "at": self.wall(), "sources": sources}))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(str(path.parent))
            self._highest[service] = (current, sources)

    # --- events -----------------------------------------------------------------------------------------------
    def emit(self, kind: EventKind, service: str, data: dict[str, Any], epoch: int | None = None,
             throttle: tuple[str, ...] = ()) -> None:
        """Record a pulse event; with ``throttle`` at most one per that key a minute (a peer retrying a forged
        frame every 200 ms must not flood the history). Never raises: the history must not stop replication."""
        if throttle:
            k = (kind.name, service, *throttle)
            now = self.clock()
            with self._lock:
                if now - self._emitted.get(k, -THROTTLE) < THROTTLE:
                    return
                self._emitted[k] = now
        if self.pulse is None:
            return
        try:
            self.pulse.emit(kind, node=self.node, service=service, epoch=epoch, data=data)
        except Exception as exc:  # noqa: BLE001
            log.warning("replication %s: could not record %s: %s", self.node, kind, exc)
