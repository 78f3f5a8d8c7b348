"""The standby's side: follow the lease holder's copy of one source, apply what it sends, acknowledge it.

One :class:`Follower` thread per (service, source) while this node is a
standby of the service; it runs sessions against the current lease holder
until told to stop, reconnecting with a short backoff after any failure. A
session of a ledger:

1. connect and handshake (:mod:`continuity.replication.handshake`); the
   primary's epoch must be confirmed by the lease (:mod:`continuity.replication.authority`)
   and not below the highest this copy applied, before anything is touched;
2. find where the two histories meet: offer positions of this copy, the
   primary answers with the highest it holds too; refine until exact;
3. a tail the primary does not have is cut off and kept aside, reported as
   ``replication.diverged``, never merged;
4. apply each data frame (continuity checked, written, fdatasync'd) after
   confirming its sender and epoch against the lease, then acknowledge it; the
   acknowledgement is what sync writes wait for.

Any disconnect leaves the copy at a position it holds completely, so the next
session continues from there (``replication.resumed``) without a full copy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from continuity.blueprint import DataSource
from continuity.events import REPLICATION_DIVERGED, REPLICATION_REFUSED, REPLICATION_RESUMED
from continuity.replication import authority, handshake
from continuity.replication.context import Context, source_name
from continuity.replication.ledger import LedgerError, LedgerLog, Position
from continuity.replication.wire import Channel, Closed, WireError
from continuity.services.layout import service_dir
from continuity.state.replication import Applied

log = logging.getLogger("continuity.replication")

BACKOFF_MIN = 0.2
BACKOFF_MAX = 2.0


class Stopped(Exception):
    """The follower was told to stop (the role moved, the replicator is shutting down)."""


@dataclass
class Progress:
    """What a follower holds and knows, for the publisher: its applied position and the primary's head."""

    applied: Applied | None = None
    head: Position | None = None
    synced: float | None = None  # wall time this copy last held the primary's whole head (Applied.synced)
    connected: bool = False
    sessions: int = 0
    bytes_received: int = 0
    last_error: str = ""


# source kind -> how a session of it runs on the standby (SQLite and directories register theirs)
Session = Callable[["Follower", Channel, int], None]
SESSIONS: dict[str, Session] = {}


class Follower:
    """Follows ``primary``'s copy of one source of ``service`` until :meth:`stop`."""

    def __init__(self, ctx: Context, service: str, ds: DataSource, primary: str) -> None:
        self.ctx = ctx
        self.service = service
        self.ds = ds
        self.source = source_name(ds)
        self.primary = primary
        self.progress = Progress()
        self._stop = threading.Event()
        self._channel: Channel | None = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"continuity-repl-follow-{service}-{self.source}")

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        ch = self._channel
        if ch is not None:
            ch.close()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def received(self) -> int:
        """Bytes received from primaries so far, the current session's included (what replication cost)."""
        ch = self._channel
        return self.progress.bytes_received + (ch.received_bytes if ch is not None else 0)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set() or self.ctx.stopping.is_set()

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self.stopped:
            try:
                self._session()
                backoff = BACKOFF_MIN
            except Stopped:
                break
            except (WireError, LedgerError, OSError) as exc:
                self.progress.last_error = str(exc)[:300]
                if not self.stopped:
                    self._failed(exc)
            except Exception as exc:  # noqa: BLE001 - a bug must not end following for good
                self.progress.last_error = str(exc)[:300]
                log.exception("replication %s: following %s/%s failed", self.ctx.node, self.service, self.source)
            finally:
                self.progress.connected = False
                self._channel = None
            if self._stop.wait(backoff):
                break
            backoff = min(BACKOFF_MAX, backoff * 2)

    def _failed(self, exc: Exception) -> None:
        reason = getattr(exc, "reason", type(exc).__name__)
        if isinstance(exc, Closed | OSError | handshake.Refused):
            log.info("replication %s: %s/%s from %s: %s", self.ctx.node, self.service, self.source, self.primary, exc)
            return
        log.warning("replication %s: refused %s's %s/%s: %s", self.ctx.node, self.primary, self.service,
                    self.source, exc)
        self.ctx.emit(REPLICATION_REFUSED, self.service, throttle=(self.primary, reason),
                      data={"source": self.source, "peer": self.primary, "reason": reason, "detail": str(exc)[:300],
                            "side": "standby"})

    # --- one session --------------------------------------------------------------------------------------------
    def _session(self) -> None:
        if self.ds.kind != "ledger" and self.ds.kind not in SESSIONS:
            log.warning("replication %s: no replication for %s sources yet", self.ctx.node, self.ds.kind)
            raise Stopped
        channel, epoch = handshake.connect(self.ctx, self.primary, self.service, self.source, self.ds.kind)
        self._channel = channel
        if self.stopped:
            channel.close()
            raise Stopped
        try:
            self.progress.connected = True
            self.progress.sessions += 1
            if self.ds.kind == "ledger":
                self._follow_ledger(channel, epoch)
            else:
                SESSIONS[self.ds.kind](self, channel, epoch)
        finally:
            self.progress.bytes_received += channel.received_bytes
            channel.close()

    def authorize(self, epoch: int) -> int:
        """Raise unless the primary holds the lease at ``epoch`` (waiting a while for a reading that says so)
        and ``epoch`` is not below the highest this copy applied; returns that highest."""
        highest = self.ctx.highest(self.service)
        why = self.ctx.leases.check(self.primary, epoch, self.service, highest, timeout=self.ctx.lease_wait)
        if self.stopped:
            raise Stopped
        if why is not None:
            raise WireError(why, f"{self.primary} at epoch {epoch} (highest applied here: {highest}): "
                                 f"{'the lease does not confirm it' if why == authority.UNCONFIRMED else why}")
        return highest

    def publish(self, offset: int, count: int | None, last_seq: int | None, digest: str | None, epoch: int) -> None:
        self.progress.applied = Applied(self.service, self.source, self.ctx.node, offset, count, last_seq, digest,
                                        epoch, self.primary, self.ctx.wall(), self.progress.synced)

    def _heard(self, copy: LedgerLog, epoch: int) -> None:
        """The primary's head arrived (a frame or a keepalive): holding all of it, this copy is synced now."""
        head = self.progress.head
        if head is not None and copy.count >= head.count:
            self.progress.synced = self.ctx.wall()
        self.publish(copy.end_offset, copy.count, copy.last_seq, None, epoch)

    # --- ledgers ------------------------------------------------------------------------------------------------
    def _follow_ledger(self, channel: Channel, epoch: int) -> None:
        self.authorize(epoch)
        highest = self.ctx.highest(self.service, self.source)  # this copy's own history, not its siblings'
        copy = LedgerLog(service_dir(self.ctx.node, self.service) / self.source, writable=True).open()
        try:
            at, head = self._meet(channel, copy)
            if at != copy.end:
                if epoch <= highest:
                    # one primary per epoch, and it only appends: a primary with less than it already sent us at
                    # this very epoch lost data (a node back on an empty disk). Its history is not authoritative:
                    # keep ours, refuse, and let the layer see it
                    raise WireError("primary-behind", f"{self.primary} at epoch {epoch} holds {at.count} of the "
                                                      f"{copy.count} records this copy has of that epoch")
                self._keep_aside(copy, at)
            # after any cut: a crash between re-cuts
            self.ctx.raise_highest(self.service, epoch, self.primary, self.source)
            channel.send("start", at=at.as_list())
            self.progress.head = head
            self._heard(copy, epoch)
            self.ctx.emit(REPLICATION_RESUMED, self.service, epoch=epoch,
                          data={"source": self.source, "standby": self.ctx.node, "primary": self.primary,
                                "offset": at.offset, "count": at.count, "behind": max(0, head.count - at.count),
                                "full_copy": at.count == 0 and head.count > 0, "session": self.progress.sessions})
            self._apply_ledger(channel, copy, epoch)
        finally:
            copy.close()

    def _meet(self, channel: Channel, copy: LedgerLog) -> tuple[Position, Position]:
        return meet(channel, copy)

    def _keep_aside(self, copy: LedgerLog, at: Position) -> None:
        kept, records, size = copy.cut(at, service_dir(self.ctx.node, self.service) / ".replica" / "diverged",
                                       f"from-{self.primary}")
        log.warning("replication %s: %s/%s: cut %d record(s) %s does not have, kept in %s", self.ctx.node,
                    self.service, self.source, records, self.primary, kept)
        self.ctx.emit(REPLICATION_DIVERGED, self.service,
                      data={"source": self.source, "standby": self.ctx.node, "primary": self.primary,
                            "kept": str(kept), "records": records, "bytes": size, "at": at.count})

    def _apply_ledger(self, channel: Channel, copy: LedgerLog, epoch: int) -> None:
        while True:
            if self.stopped:
                channel.send("bye")
                raise Stopped
            msg = channel.recv()
            if msg.kind == "data":
                frame_epoch = msg.get("epoch")
                if frame_epoch != epoch:
                    raise WireError("stale-epoch", f"frame of epoch {frame_epoch} in a session of epoch {epoch}")
                self.authorize(epoch)
                copy.apply(Position.from_list(msg.get("start")), msg.payload, Position.from_list(msg.get("end")))
                channel.send("ack", at=copy.end.as_list())
                self.progress.head = Position.from_list(msg.get("head"))
                self._heard(copy, epoch)
            elif msg.kind == "idle":
                self.progress.head = Position.from_list(msg.get("head"))
                channel.send("ack", at=copy.end.as_list())
                self._heard(copy, epoch)
            elif msg.kind == "end":
                raise Closed(f"the primary ended the session: {msg.get('reason')}")
            else:
                raise WireError("malformed", f"unexpected {msg.kind} frame")


def meet(channel: Channel, copy: LedgerLog) -> tuple[Position, Position]:
    """Where this copy and the sender's agree last, and the sender's end: exact, after as many rounds as it
    takes (usually one). Also what a failover candidate asks a standby before fetching its copy (catchup.py)."""
    probes = copy.probes(0, copy.count)
    channel.send("subscribe", probes=[p.as_list() for p in probes])
    while True:
        msg = channel.recv()
        if msg.kind == "end":
            raise Closed(f"the sender ended the session: {msg.get('reason')}")
        if msg.kind != "match":
            raise WireError("malformed", f"expected match, got {msg.kind}")
        at, head = Position.from_list(msg.get("at")), Position.from_list(msg.get("head"))
        if not copy.holds(at):
            raise WireError("malformed", f"the sender matched {at.as_list()}, which this copy never offered")
        above = [p.count for p in probes if p.count > at.count]
        if not above or min(above) == at.count + 1:
            return at, head
        probes = copy.probes(at.count, min(above))
        channel.send("probe", probes=[p.as_list() for p in probes])
