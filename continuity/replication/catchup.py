"""A failover candidate catching up from a standby's copy, over the replication protocol.

Nodes own their disks: the old primary's files are gone with it (or out of
reach behind a partition), and no code on the candidate opens anything under
another node's root. What survives is on the other standbys, and each runs a
replicator that answers on its node's address. The candidate's prepare step
(:func:`continuity.failover.steps.prepare`) asks each of them for its copy of a
ledger with a *fetch* hello (same node keys, same session MACs or encryption as
replication): the same position search says where the two copies meet and how
far the standby's goes (:func:`survey`); the step's decider picks the freshest;
:func:`fetch` then takes everything after the meeting point and appends it to
the candidate's own copy frame by frame, each frame checked against the hash
chain (no gap, no overlap, the same history) and fsync'd. A tail of the
candidate's own that the standby does not have is cut off and kept aside in
``.replica/diverged/`` (as a standby following a primary does), never merged.

Safe against the candidate's own replicator writing the same file: prepare
runs after the fence, when the old lease has run out (plus the margin), so the
candidate's follower can no longer apply a frame (every frame needs a lease
reading that proves its sender holds the role); and :meth:`LedgerLog.apply`
refuses to write over a file that changed under it.

I/O shell: sockets and the candidate's own files; the choice of source is the
pure :func:`continuity.failover.prepare.decide`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuity.blueprint import Blueprint
from continuity.replication import handshake
from continuity.replication.authority import LeaseWatch
from continuity.replication.context import Context
from continuity.replication.follower import meet
from continuity.replication.ledger import LedgerError, LedgerLog, Position
from continuity.replication.wire import Channel, Closed, WireError
from continuity.state.heartbeats import SecretRing

log = logging.getLogger("continuity.replication")

CONNECT_TIMEOUT = 2.0  # a standby that does not answer in this long is unreachable (a failover is waiting)


@dataclass
class Offer:
    """What one reachable standby has: its copy's end (``head``), where it meets ours (``at``), its epoch."""

    node: str
    head: Position
    at: Position
    epoch: int
    channel: Channel | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.channel is not None:
            try:
                self.channel.send("bye")
            except (WireError, OSError):
                pass
            self.channel.close()
            self.channel = None


@dataclass(frozen=True)
class Fetched:
    """What a fetch did: from whom, the position our copy started from and ends at, what it cost."""

    node: str
    start: Position
    end: Position
    records: int
    bytes: int
    cut_records: int = 0
    kept: str | None = None
    last_seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.node, "start": self.start.count, "end": self.end.count, "records": self.records,
                "bytes": self.bytes, "cut_records": self.cut_records, "kept": self.kept, "last_seq": self.last_seq}


def context(bp: Blueprint, node: str, client: Any = None, timeout: float = 5.0) -> Context:
    """A replication context for a one-off fetch from ``node``'s worker (no lease watch runs: a fetch needs none)."""
    ctx = Context(bp, node, SecretRing(), LeaseWatch(client, []))
    ctx.timeout = timeout
    return ctx


def survey(ctx: Context, service: str, source: str, copy: LedgerLog, nodes: list[str]) -> tuple[list[Offer],
                                                                                                  dict[str, str]]:
    """Ask each of ``nodes`` for its copy of ``service``'s ``source``: the offers of those that answered (their
    channels left open for :func:`fetch`; close the others with :meth:`Offer.close`), and why each other did not."""
    offers: list[Offer] = []
    unreachable: dict[str, str] = {}
    for node in nodes:
        try:
            channel, epoch = handshake.connect(ctx, node, service, source, "ledger", fetch=True,
                                               timeout=CONNECT_TIMEOUT)
        except (WireError, OSError) as exc:
            unreachable[node] = str(exc)[:200] or type(exc).__name__
            continue
        try:
            at, head = meet(channel, copy)
        except (WireError, LedgerError, OSError) as exc:
            channel.close()
            unreachable[node] = str(exc)[:200] or type(exc).__name__
            continue
        offers.append(Offer(node, head, at, epoch, channel))
    return offers, unreachable


def fetch(offer: Offer, copy: LedgerLog, aside: Path) -> Fetched:
    """Take everything ``offer``'s standby has after where our copies meet into ``copy`` (checked, durable)."""
    channel = offer.channel
    assert channel is not None and copy.writable
    start = copy.end
    cut, kept = 0, None
    try:
        if offer.at != copy.end:
            path, cut, _ = copy.cut(offer.at, aside, f"fetch-{offer.node}")
            kept = str(path)
            log.warning("catchup: cut %d record(s) of %s that %s does not have, kept in %s", cut, copy.path,
                        offer.node, path)
        channel.send("start", at=offer.at.as_list())
        received = 0
        while True:
            msg = channel.recv()
            if msg.kind == "data":
                copy.apply(Position.from_list(msg.get("start")), msg.payload, Position.from_list(msg.get("end")))
                received += len(msg.payload)
            elif msg.kind == "end":
                if msg.get("reason") != "complete":
                    raise Closed(f"{offer.node} ended the fetch: {msg.get('reason')}")
                break
            else:
                raise WireError("malformed", f"unexpected {msg.kind} frame in a fetch")
        if copy.end.count < offer.head.count:
            raise LedgerError("short", f"{offer.node} offered {offer.head.count} records, sent up to {copy.end.count}")
        return Fetched(offer.node, start, copy.end, copy.end.count - offer.at.count, received, cut, kept,
                       copy.last_seq)
    finally:
        channel.close()
        offer.channel = None
