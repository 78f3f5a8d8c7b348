"""The two ends of a connection's opening: the standby's hello, the primary's welcome, the session keys.

The standby says who it is, whom it wants, which service and source, and a
nonce, MAC'd with its own node key. The primary checks that the standby is a
declared standby of that service, that the source is declared, that it holds
the role itself (its lease, confirmed), and answers with its nonce and its
epoch, MAC'd with its node key over both nonces. Each side then derives the
session keys (:func:`continuity.replication.wire.session_key`); the standby's
first sealed frame proves to the primary that it holds the standby's key and
saw this welcome. A refusal is one plain frame with a reason and nothing else.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from continuity.replication import authority, wire
from continuity.replication.context import Context
from continuity.replication.wire import Channel, Opener, Sealer, WireError

HANDSHAKE_TIMEOUT = 5.0


class Refused(WireError):
    """The primary said no (not primary, not a standby, no such source): not an attack, try again later."""


@dataclass(frozen=True)
class Hello:
    standby: str
    primary: str
    service: str
    source: str
    kind: str
    doc: dict[str, Any]


def _refuse(sock: socket.socket, reason: str) -> None:
    try:
        out = sock.makefile("wb")
        wire.write_plain(out, {"t": "refused", "reason": reason})
        out.close()
    except OSError:
        pass


def accept(ctx: Context, sock: socket.socket) -> tuple[Channel, Hello, int]:
    """The primary's side: returns the channel, the hello and the epoch it serves at; raises WireError."""
    sock.settimeout(HANDSHAKE_TIMEOUT)
    reader = sock.makefile("rb", buffering=256 * 1024)
    doc = wire.read_plain(reader)
    try:
        hello = Hello(str(doc["standby"]), str(doc["primary"]), str(doc["service"]), str(doc["source"]),
                      str(doc["kind"]), doc)
    except KeyError as exc:
        _refuse(sock, "malformed")
        raise WireError("malformed", f"hello without {exc}") from None
    problem = _check_hello(ctx, hello)
    if problem is not None:
        _refuse(sock, problem[0])
        raise WireError(*problem)
    if not wire.signed_by(ctx.key(hello.standby), doc):
        _refuse(sock, "bad-mac")
        raise WireError("bad-mac", f"hello claiming to be {hello.standby} is not signed with its key")
    if hello.doc.get("fetch") is True:
        # a failover candidate fetching this node's copy (catchup.py): served read-only, by any node of the
        # placement, at the highest epoch this copy applied; the requester checks every byte by the hash chain
        epoch = ctx.highest(hello.service)
    else:
        view = ctx.leases.view(hello.service)
        epoch = view.epoch if view is not None else 0
        why = authority.judge(ctx.node, epoch, view, 0, ctx.clock())
        if why is not None:
            _refuse(sock, "not-primary")
            raise Refused("not-primary", f"{ctx.node} does not hold the lease of {hello.service} ({why})")
    n_s = wire.nonce()
    welcome = wire.sign(ctx.key(ctx.node), {"t": "welcome", "v": wire.VERSION, "primary": ctx.node,
                                           "standby": hello.standby, "hello": doc.get("nonce"), "nonce": n_s,
                                           "epoch": epoch})
    out = sock.makefile("wb")
    wire.write_plain(out, welcome)
    out.close()
    sock.settimeout(ctx.timeout)
    channel = Channel(sock, Sealer(wire.session_key(ctx.key(ctx.node), "p2s", doc, n_s), ctx.encrypt),
                      Opener(wire.session_key(ctx.key(hello.standby), "s2p", doc, n_s), ctx.encrypt), reader)
    return channel, hello, epoch


def _check_hello(ctx: Context, h: Hello) -> tuple[str, str] | None:
    if h.doc.get("v") != wire.VERSION:
        return "version", f"protocol version {h.doc.get('v')!r}, this node speaks {wire.VERSION}"
    if h.primary != ctx.node:
        return "wrong-node", f"hello for {h.primary!r} reached {ctx.node}"
    if h.service not in ctx.bp.services:
        return "unknown-service", f"no service {h.service!r}"
    if h.standby == ctx.node or h.standby not in ctx.placement(h.service):
        return "not-a-standby", f"{h.standby!r} is not in the placement of {h.service}"
    ds = ctx.source(h.service, h.source)
    if ds is None or ds.kind != h.kind:
        return "unknown-source", f"{h.service} declares no {h.kind} source {h.source!r}"
    if bool(h.doc.get("encrypt")) != ctx.encrypt:
        return "encryption-mismatch", f"the standby {'wants' if h.doc.get('encrypt') else 'does not want'} " \
                                      "encryption; check policy.replication.encrypt on both nodes"
    return None


def connect(ctx: Context, primary: str, service: str, source: str, kind: str, fetch: bool = False,
            timeout: float = HANDSHAKE_TIMEOUT) -> tuple[Channel, int]:
    """The standby's side: a channel to ``primary`` for one source and the epoch it serves at; raises WireError
    (Refused when the primary declined) or OSError (unreachable). ``fetch``: ask for the node's copy as it is,
    whether or not it is the primary (a failover candidate catching up, :mod:`continuity.replication.catchup`)."""
    address, port = ctx.endpoint(primary)
    sock = socket.create_connection((address, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        doc = {"t": "hello", "v": wire.VERSION, "standby": ctx.node, "primary": primary, "service": service,
               "source": source, "kind": kind, "nonce": wire.nonce(), "encrypt": ctx.encrypt}
        if fetch:
            doc["fetch"] = True
        hello = wire.sign(ctx.key(ctx.node), doc)
        out = sock.makefile("wb")
        wire.write_plain(out, hello)
        out.close()
        reader = sock.makefile("rb", buffering=256 * 1024)
        welcome = wire.read_plain(reader)
        if welcome.get("t") == "refused":
            raise Refused(str(welcome.get("reason") or "refused"), f"{primary} refused {service}/{source}")
        if welcome.get("t") != "welcome" or not wire.signed_by(ctx.key(primary), welcome):
            raise WireError("bad-mac", f"the answer claiming to be {primary}'s is not signed with its key")
        if welcome.get("hello") != hello["nonce"] or welcome.get("standby") != ctx.node:
            raise WireError("replayed", "the welcome answers another hello")
        epoch = welcome.get("epoch")
        if not isinstance(epoch, int) or not isinstance(welcome.get("nonce"), str):
            raise WireError("malformed", "welcome without epoch or nonce")
        sock.settimeout(ctx.timeout)
        n_s = welcome["nonce"]
        channel = Channel(sock, Sealer(wire.session_key(ctx.key(ctx.node), "s2p", hello, n_s), ctx.encrypt),
                          Opener(wire.session_key(ctx.key(primary), "p2s", hello, n_s), ctx.encrypt), reader)
        return channel, epoch
    except BaseException:
        sock.close()
        raise
