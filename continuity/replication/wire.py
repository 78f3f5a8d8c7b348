"""Frames between two replicators: length-prefixed, authenticated by the sender's node key, optionally encrypted.

Why a framed TCP stream and not HTTP requests: a ledger follower needs records
pushed to it the moment they are written and must send its acknowledgements
back without waiting for the next request; one long-lived connection per
(standby, source) carries both, with no per-record request overhead (the sync
mode budget is a few milliseconds per write).

Who may speak: every node holds node keys (the same ones heartbeats are signed
with, :mod:`continuity.state.heartbeats`). A connection starts with a *hello*
from the standby and a *welcome* from the primary, each MAC'd with its sender's
own key over both nonces, so each side knows who answered and that the answer
is fresh. Each direction then derives its own session key from its sender's
node key and both nonces; every frame after that carries a MAC (HMAC-SHA256)
over a per-direction counter and its bytes, or, when the blueprint says
``policy.replication.encrypt``, is sealed with AES-256-GCM under that key with
the counter as nonce. So a frame cannot be forged without the sender's key,
altered, replayed, reordered, or moved to another connection, and a standby
knows that data came from the node it believes to be the lease holder.

Why not TLS: it needs a certificate authority and certificates per node, none
of which the fleet has; the node keys are already provisioned and verified
(the bed installs them as provisioning would). Encryption here protects data
crossing hosts; the keys never cross the wire.

Frame: ``u32 length | sealed``; sealed = ``tag(32) | body`` (MAC) or AES-GCM of
``body`` (encrypted); body = ``u32 header length | header JSON | payload``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
LEN = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
MAC_LEN = 32
CONTEXT = "continuity-replication/1"


class WireError(Exception):
    """The peer sent something that must not be believed; ``reason`` is a short stable word for events."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Closed(WireError):
    """The connection ended (cleanly or not)."""

    def __init__(self, detail: str = "connection closed") -> None:
        super().__init__("closed", detail)


@dataclass(frozen=True)
class Message:
    """One frame: ``kind`` (the header's ``t``), the rest of its header, and raw payload bytes."""

    kind: str
    header: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""

    def get(self, name: str, default: Any = None) -> Any:
        return self.header.get(name, default)


# --- plain frames (hello / welcome) -------------------------------------------------------------------------------
def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sign(key: bytes, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with a ``mac`` over its canonical JSON (without ``mac``)."""
    body = {k: v for k, v in doc.items() if k != "mac"}
    return {**body, "mac": hmac.digest(key, _canonical(body), "sha256").hex()}


def signed_by(key: bytes, doc: dict[str, Any]) -> bool:
    mac = doc.get("mac")
    if not isinstance(mac, str):
        return False
    body = {k: v for k, v in doc.items() if k != "mac"}
    return hmac.compare_digest(mac, hmac.digest(key, _canonical(body), "sha256").hex())


def nonce() -> str:
    return os.urandom(16).hex()


def session_key(node_key: bytes, direction: str, hello: dict[str, Any], welcome_nonce: str) -> bytes:
    """The key one direction of one connection is sealed with: the sender's node key bound to everything the
    two sides agreed (service, source, both nodes, both nonces), so it is good for this connection only."""
    parts = [CONTEXT, direction, str(hello.get("service")), str(hello.get("source")), str(hello.get("standby")),
             str(hello.get("primary")), str(hello.get("nonce")), welcome_nonce]
    return hmac.digest(node_key, "|".join(parts).encode(), "sha256")


def write_plain(out: BinaryIO, doc: dict[str, Any]) -> None:
    body = _canonical(doc)
    out.write(LEN.pack(len(body)) + body)
    out.flush()


def read_exact(inp: BinaryIO, n: int) -> bytes:
    data = inp.read(n)
    if data is None or len(data) < n:
        raise Closed("connection closed mid-frame" if data else "connection closed")
    return data


def read_frame(inp: BinaryIO, limit: int = MAX_FRAME) -> bytes:
    (n,) = LEN.unpack(read_exact(inp, LEN.size))
    if n > limit:
        raise WireError("too-large", f"frame of {n} bytes (limit {limit})")
    return read_exact(inp, n)


def read_plain(inp: BinaryIO, limit: int = 64 * 1024) -> dict[str, Any]:
    raw = read_frame(inp, limit)
    try:
        doc = json.loads(raw)
    except ValueError:
        raise WireError("malformed", "a plain frame that is not JSON") from None
    if not isinstance(doc, dict):
        raise WireError("malformed", "a plain frame that is not a JSON object")
    return doc


# --- sealed frames ------------------------------------------------------------------------------------------------
class Sealer:
    """Seals the frames one side sends on one connection (MAC or AES-GCM; a counter as replay guard)."""

    def __init__(self, key: bytes, encrypt: bool) -> None:
        self.key = key
        self.aead = AESGCM(key) if encrypt else None
        self.counter = 0

    def seal(self, msg: Message) -> bytes:
        header = json.dumps({**msg.header, "t": msg.kind}, separators=(",", ":")).encode()
        body = LEN.pack(len(header)) + header + msg.payload
        ctr = self.counter.to_bytes(8, "big")
        self.counter += 1
        if self.aead is not None:
            sealed = self.aead.encrypt(b"\0\0\0\0" + ctr, body, ctr)
        else:
            sealed = hmac.digest(self.key, ctr + body, "sha256") + body
        if len(sealed) > MAX_FRAME:
            raise WireError("too-large", f"frame of {len(sealed)} bytes")
        return LEN.pack(len(sealed)) + sealed


class Opener:
    """Opens the frames one side receives: wrong key, altered, replayed or reordered frames raise WireError."""

    def __init__(self, key: bytes, encrypt: bool) -> None:
        self.key = key
        self.aead = AESGCM(key) if encrypt else None
        self.counter = 0

    def open(self, sealed: bytes) -> Message:
        ctr = self.counter.to_bytes(8, "big")
        if self.aead is not None:
            try:
                body = self.aead.decrypt(b"\0\0\0\0" + ctr, sealed, ctr)
            except Exception:  # noqa: BLE001 - InvalidTag, or a frame too short to hold one
                raise WireError("bad-mac", "frame does not decrypt under the sender's key (forged, altered, "
                                           "replayed or out of order)") from None
        else:
            tag, body = sealed[:MAC_LEN], sealed[MAC_LEN:]
            if len(tag) < MAC_LEN or not hmac.compare_digest(tag, hmac.digest(self.key, ctr + body, "sha256")):
                raise WireError("bad-mac", "frame MAC does not match the sender's key (forged, altered, replayed "
                                           "or out of order)")
        self.counter += 1
        if len(body) < LEN.size:
            raise WireError("malformed", "frame body too short")
        (hlen,) = LEN.unpack_from(body)
        try:
            header = json.loads(body[LEN.size:LEN.size + hlen])
        except ValueError:
            raise WireError("malformed", "frame header is not JSON") from None
        if not isinstance(header, dict) or not isinstance(header.get("t"), str):
            raise WireError("malformed", "frame header without a kind")
        kind = header.pop("t")
        return Message(kind, header, bytes(body[LEN.size + hlen:]))


class Channel:
    """One connection after the handshake: send and receive messages (send from one thread, receive from one)."""

    def __init__(self, sock: socket.socket, sealer: Sealer, opener: Opener, reader: BinaryIO | None = None) -> None:
        self.sock = sock
        self.sealer = sealer
        self.opener = opener
        self.reader = reader or sock.makefile("rb", buffering=256 * 1024)
        self.sent_bytes = 0
        self.received_bytes = 0

    def send(self, kind: str, payload: bytes = b"", **header: Any) -> None:
        frame = self.sealer.seal(Message(kind, header, payload))
        try:
            self.sock.sendall(frame)
        except OSError as exc:
            raise Closed(f"send failed: {exc}") from None
        self.sent_bytes += len(frame)

    def recv(self) -> Message:
        try:
            raw = read_frame(self.reader)
        except OSError as exc:  # a timeout or a reset
            raise Closed(f"receive failed: {exc}") from None
        self.received_bytes += LEN.size + len(raw)
        return self.opener.open(raw)

    def close(self) -> None:
        for step in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close, self.reader.close):
            try:
                step()
            except OSError:
                pass


def digest(data: bytes) -> str:
    """Content digest used across replication (images, chunks): SHA-256, hex."""
    return hashlib.sha256(data).hexdigest()
