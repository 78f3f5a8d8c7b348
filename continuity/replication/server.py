"""The primary's side: accept standbys on the node's address, and stream each the source it asked for.

One thread per connection (a handful per node: standbys × sources). A ledger
connection has two: the sender tails the log and ships whole lines as soon as
they appear (woken at once by a sync write's wait, else within ``poll``), and
a reader takes the standby's acknowledgements, which is what sync writes and
lag are made of. A connection opens with the position search
(:mod:`continuity.replication.ledger`): the standby offers positions it holds,
the primary answers with the highest it holds too, so a standby continues
where it stopped — after a disconnect, a kill -9, a partition — and a standby
whose history parted from ours learns exactly where.

The sender checks its own lease before every frame (from the lease watch's
proven reading): a primary that lost its role stops sending at once and tells
the standby why.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

from continuity.events import REPLICATION_REFUSED
from continuity.replication import handshake
from continuity.replication.context import Context
from continuity.replication.handshake import Hello
from continuity.replication.ledger import LedgerError, LedgerLog, Position
from continuity.replication.streams import LedgerStream
from continuity.replication.wire import Channel, Closed, Message, WireError
from continuity.services.layout import service_dir

log = logging.getLogger("continuity.replication")

FRAME_DATA = 1024 * 1024  # ledger bytes per frame at most
MAX_PROBES = 512

# source kind -> how a connection for it is served (SQLite and directories register theirs)
Serve = Callable[[Context, Channel, Hello, int, Message], None]
SERVERS: dict[str, Serve] = {}


def handle(ctx: Context, sock: socket.socket, streams: Callable[[str, str], LedgerStream | None]) -> None:
    """One incoming connection, start to end; never raises."""
    channel: Channel | None = None
    hello: Hello | None = None
    try:
        channel, hello, epoch = handshake.accept(ctx, sock)
        first = channel.recv()  # sealed with the standby's session key: proves who it is
        if hello.kind == "ledger" and hello.doc.get("fetch") is True:
            serve_copy(ctx, channel, hello, epoch, first)
        elif hello.kind == "ledger":
            stream = streams(hello.service, hello.source)
            if stream is None:
                channel.send("end", reason="no such ledger here yet")
                return
            serve_ledger(ctx, channel, hello, epoch, first, stream)
        else:
            SERVERS[hello.kind](ctx, channel, hello, epoch, first)
    except handshake.Refused as exc:
        log.info("replication %s: refused %s: %s", ctx.node, hello or "a hello", exc)
    except Closed:
        pass
    except (WireError, LedgerError) as exc:
        reason = getattr(exc, "reason", "error")
        peer = hello.standby if hello else _peer(sock)
        log.warning("replication %s: refused %s: %s", ctx.node, peer, exc)
        ctx.emit(REPLICATION_REFUSED, hello.service if hello else "", throttle=(peer, reason),
                 data={"source": hello.source if hello else "", "peer": peer, "reason": reason,
                       "detail": str(exc)[:300], "side": "primary"})
    except OSError as exc:
        log.info("replication %s: connection from %s ended: %s", ctx.node, _peer(sock), exc)
    except Exception:  # noqa: BLE001 - one bad connection must not take the server down
        log.exception("replication %s: connection from %s failed", ctx.node, _peer(sock))
    finally:
        if channel is not None:
            channel.close()
        else:
            sock.close()


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


def serve_ledger(ctx: Context, channel: Channel, hello: Hello, epoch: int, first: Message,
                 stream: LedgerStream) -> None:
    """Find where the standby's history and ours meet, then stream from there until something ends it."""
    msg = first
    stream.refresh()
    while msg.kind in ("subscribe", "probe"):
        probes = [Position.from_list(p) for p in (msg.get("probes") or [])[:MAX_PROBES]]
        channel.send("match", at=stream.match(probes).as_list(), head=stream.end.as_list(), epoch=epoch)
        msg = channel.recv()
    if msg.kind != "start":
        raise WireError("malformed", f"expected start, got {msg.kind}")
    at = Position.from_list(msg.get("at"))
    with stream.cond:
        if not stream.log.holds(at):
            raise LedgerError("discontinuity", f"the standby starts at {at.as_list()}, not a position here")
    stream.connected(hello.standby, at)
    dead = threading.Event()
    reader = threading.Thread(target=_read_acks, args=(ctx, channel, hello, stream, dead),
                              name=f"continuity-repl-acks-{hello.standby}", daemon=True)
    reader.start()
    try:
        _send_loop(ctx, channel, hello, epoch, stream, at, dead)
    finally:
        dead.set()
        stream.disconnected(hello.standby)


def serve_copy(ctx: Context, channel: Channel, hello: Hello, epoch: int, first: Message) -> None:
    """A failover candidate fetching this node's copy of a ledger (whatever this node's role): the same position
    search, then everything after the meeting point, then an end that says it is complete. Read-only."""
    try:
        log_ = LedgerLog(service_dir(ctx.node, hello.service) / hello.source).open()
    except FileNotFoundError:
        channel.send("end", reason="no copy of that ledger here")
        return
    try:
        msg = first
        while msg.kind in ("subscribe", "probe"):
            probes = [Position.from_list(p) for p in (msg.get("probes") or [])[:MAX_PROBES]]
            channel.send("match", at=log_.best_match(probes).as_list(), head=log_.end.as_list(), epoch=epoch)
            msg = channel.recv()
        if msg.kind == "bye":
            return
        if msg.kind != "start":
            raise WireError("malformed", f"expected start, got {msg.kind}")
        pos = Position.from_list(msg.get("at"))
        if not log_.holds(pos):
            raise LedgerError("discontinuity", f"the candidate starts at {pos.as_list()}, not a position here")
        end = log_.end
        while pos.count < end.count and not ctx.stopping.is_set():
            data, new = log_.read(pos, FRAME_DATA)
            channel.send("data", data, epoch=epoch, start=pos.as_list(), end=new.as_list(), head=end.as_list())
            pos = new
        channel.send("end", reason="complete", head=end.as_list())
    finally:
        log_.close()


def _send_loop(ctx: Context, channel: Channel, hello: Hello, epoch: int, stream: LedgerStream, at: Position,
               dead: threading.Event) -> None:
    pos = at
    generation = stream.log.generation
    last = ctx.clock()
    while not dead.is_set() and not ctx.stopping.is_set():
        why = ctx.leases.check(ctx.node, epoch, hello.service)
        if why is not None:
            channel.send("end", reason=f"{ctx.node} no longer confirmed as primary at epoch {epoch}: {why}")
            return
        end = stream.refresh()
        if stream.log.generation != generation:
            generation = stream.log.generation
            with stream.cond:
                if not stream.log.holds(pos):
                    channel.send("end", reason="the ledger was rewritten under the replicator")
                    return
        if end.count > pos.count:
            data, new = stream.read(pos, FRAME_DATA)
            channel.send("data", data, epoch=epoch, start=pos.as_list(), end=new.as_list(), head=end.as_list())
            pos = new
            last = ctx.clock()
        elif ctx.clock() - last >= ctx.idle:
            channel.send("idle", epoch=epoch, head=end.as_list())
            last = ctx.clock()
        else:
            stream.wait_data(pos, ctx.poll)


def _read_acks(ctx: Context, channel: Channel, hello: Hello, stream: LedgerStream, dead: threading.Event) -> None:
    try:
        while not dead.is_set():
            msg = channel.recv()
            if msg.kind == "ack":
                stream.ack(hello.standby, Position.from_list(msg.get("at")))
            elif msg.kind == "bye":
                break
    except (WireError, LedgerError, OSError) as exc:
        if not dead.is_set() and not isinstance(exc, Closed):
            log.warning("replication %s: acks from %s: %s", ctx.node, hello.standby, exc)
    finally:
        dead.set()
        stream.disconnected(hello.standby)
        channel.close()  # unblocks a sender waiting in sendall


def serve_rounds(ctx: Context, channel: Channel, hello: Hello, epoch: int, every: float,
                 round_once: Callable[[], bool]) -> None:
    """The primary's loop for a source replicated in rounds (SQLite, directories): ``round_once`` every ``every``
    seconds (it looks for a change and, if there is one, runs a round with the standby: True when it sent
    something), a keepalive both ways when the link is otherwise quiet, and the end as soon as this node's
    lease is not confirmed."""
    last_check = last_sent = -1e9
    while not ctx.stopping.is_set():
        why = ctx.leases.check(ctx.node, epoch, hello.service)
        if why is not None:
            channel.send("end", reason=f"{ctx.node} no longer confirmed as primary at epoch {epoch}: {why}")
            return
        if ctx.clock() - last_check >= every:
            last_check = ctx.clock()
            if round_once():
                last_sent = ctx.clock()
        if ctx.clock() - last_sent >= ctx.idle:
            channel.send("idle", epoch=epoch)
            expect_ack(channel)
            last_sent = ctx.clock()
        ctx.stopping.wait(max(0.0, min(every - (ctx.clock() - last_check), ctx.idle - (ctx.clock() - last_sent))))


def expect_ack(channel: Channel, digest: str | None = None) -> Message:
    """The standby's acknowledgement of a round (of ``digest``, when given) or of a keepalive."""
    msg = channel.recv()
    if msg.kind != "ack":
        raise WireError("malformed", f"expected ack, got {msg.kind}")
    if digest is not None and msg.get("digest") != digest:
        raise WireError("apply-failed", f"the standby holds {msg.get('digest')}, not {digest}")
    return msg


class Server(socketserver.ThreadingTCPServer):
    """The node's replication endpoint: ``address:port`` from the blueprint, one thread per connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ctx: Context, streams: Callable[[str, str], LedgerStream | None],
                 address: tuple[str, int]) -> None:
        self.ctx = ctx
        self.streams = streams
        super().__init__(address, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: Any

    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handle(self.server.ctx, self.request, self.server.streams)
