"""SQLite replication: a consistent image at the source's cadence, only changed pages travel, an atomic swap.

Why images and not WAL frames (Litestream's way). Shipping WAL frames needs the
database in WAL mode and the shipper in control of checkpoints (Litestream holds
a read transaction open so SQLite cannot checkpoint frames it has not shipped),
i.e. it reaches into how the service runs its database; and every commit appends
whole pages to the WAL, so a page written by 500 commits in a second is shipped
500 times. An image taken with SQLite's online backup API is a consistent
database whatever mode the service uses (the copy runs inside one read
transaction), and diffing it page by page against what the standby holds ships
each changed page once per round however often it changed. Measured on the
sample ledger (bench/replication_bench.py, "sqlite"): at 500 writes/s the page
diff sends a fraction of the bytes the same workload writes to a WAL, and taking
the image costs milliseconds per MB, once per interval and only when
``PRAGMA data_version`` says the database changed. The price is latency: a change
reaches the standby within one interval (1 s by default, Litestream's default
sync interval too), which is why ledgers, whose records sync mode waits for,
are streamed line by line instead (:mod:`continuity.replication.ledger`).

Crash safety on the standby: each round is staged in a file beside the replica
(a copy of the current replica with the changed pages written over it), fsync'd,
checked to be byte for byte the image the primary took (SHA-256), and renamed
over the replica; then the directory is fsync'd. A kill -9 at any moment leaves
the replica as the previous complete image or the new one — never a mix — and
a leftover staging file is removed at the next session. The image's header is
switched to rollback-journal mode (bytes 18-19), so the replica is one
self-contained file with no ``-wal`` to go with it; a stale ``-journal``/``-wal``/``-shm``
beside the replica (left from when this node ran the service) is removed before
the swap, since SQLite would otherwise "roll it back" into the new image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from continuity.backup.storage.local import fsync_dir
from continuity.replication import follower, server
from continuity.replication.context import Context
from continuity.replication.handshake import Hello
from continuity.replication.wire import Channel, Closed, Message, WireError

PAGES_PER_FRAME = 2048  # 8 MiB of 4 KiB pages
HASH = 16
SIDE_FILES = ("-journal", "-wal", "-shm")


def page_size(image: bytes) -> int:
    """The page size recorded in a database header (offset 16, big-endian; 1 means 65536)."""
    if len(image) < 100 or not image.startswith(b"SQLite format 3\0"):
        raise WireError("malformed", "not an SQLite database image")
    ps = int.from_bytes(image[16:18], "big")
    return 65536 if ps == 1 else ps


def page_hashes(image: bytes, ps: int) -> list[bytes]:
    return [hashlib.blake2b(image[i:i + ps], digest_size=HASH).digest() for i in range(0, len(image), ps)]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Images:
    """Consistent images of a live database, taken only when it changed (the primary's side)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.ino: int | None = None
        self.version: int | None = None

    def _open(self) -> None:
        self.close()
        uri = "file:" + urllib.parse.quote(str(self.path)) + "?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)
        self.ino = os.stat(self.path).st_ino
        self.version = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def changed(self) -> bool:
        """Did the database change since the last call (another connection committed, or the file was replaced)?"""
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False
        if self.conn is None or ino != self.ino:
            self._open()
        assert self.conn is not None
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self.version:
            return False
        self.version = version
        return True

    def capture(self) -> bytes:
        """The database as of one instant (one read transaction), in rollback-journal mode."""
        assert self.conn is not None
        dst = sqlite3.connect(":memory:")
        try:
            self.conn.backup(dst)
            image = bytearray(dst.serialize())
        finally:
            dst.close()
        image[18] = image[19] = 1  # legacy (rollback journal) read/write versions: no -wal file goes with it
        return bytes(image)


def describe(path: Path) -> dict[str, Any] | None:
    """What a standby holds: size, page size, digest and page hashes (hex), so only other pages are sent."""
    try:
        data = path.read_bytes()
        ps = page_size(data)
    except (OSError, WireError):
        return None
    return {"size": len(data), "page_size": ps, "digest": digest(data), "pages": b"".join(page_hashes(data, ps)).hex()}


def _known(have: dict[str, Any] | None) -> tuple[str | None, int | None, list[bytes]]:
    if not isinstance(have, dict):
        return None, None, []
    try:
        raw = bytes.fromhex(str(have.get("pages") or ""))
    except ValueError:
        return None, None, []
    pages = [raw[i:i + HASH] for i in range(0, len(raw), HASH)]
    ps = have.get("page_size")
    return (str(have["digest"]) if have.get("digest") else None), (ps if isinstance(ps, int) else None), pages


# --- the primary's side -----------------------------------------------------------------------------------------
def serve_sqlite(ctx: Context, channel: Channel, hello: Hello, epoch: int, first: Message) -> None:
    if first.kind != "subscribe":
        raise WireError("malformed", f"expected subscribe, got {first.kind}")
    ds = ctx.source(hello.service, hello.source)
    assert ds is not None
    images = Images(ctx.path(hello.service, ds))
    rs = ctx.round_stream(hello.service, hello.source)
    held, held_ps, held_pages = _known(first.get("have"))
    rs.connected(hello.standby, held)

    def round_once() -> bool:
        nonlocal held, held_ps, held_pages
        if not images.changed():
            return False
        image = images.capture()
        d = digest(image)
        rs.seen(d, len(image))
        if d == held:
            return False
        ps = page_size(image)
        hashes = page_hashes(image, ps)
        changed = [i for i, h in enumerate(hashes)
                   if ps != held_ps or i >= len(held_pages) or held_pages[i] != h]
        rs.sending(hello.standby, len(changed) * ps)
        _send_image(channel, epoch, image, ps, d, changed)
        server.expect_ack(channel, d)
        rs.acked(hello.standby, d)
        held, held_ps, held_pages = d, ps, hashes
        return True

    try:
        server.serve_rounds(ctx, channel, hello, epoch, ds.every(), round_once)
    finally:
        rs.disconnected(hello.standby)
        images.close()


def _send_image(channel: Channel, epoch: int, image: bytes, ps: int, d: str, changed: list[int]) -> None:
    parts = [changed[i:i + PAGES_PER_FRAME] for i in range(0, len(changed), PAGES_PER_FRAME)] or [[]]
    for n, part in enumerate(parts):
        payload = b"".join(image[i * ps:(i + 1) * ps] for i in part)
        channel.send("pages", payload, epoch=epoch, size=len(image), page_size=ps, digest=d, indices=part,
                     last=n == len(parts) - 1)


server.SERVERS["sqlite"] = serve_sqlite


# --- the standby's side -----------------------------------------------------------------------------------------
class Staging:
    """One round being applied: a copy of the replica with changed pages written over it, swapped in when whole."""

    def __init__(self, replica: Path) -> None:
        self.replica = replica
        self.tmp = replica.with_name(replica.name + ".repl-tmp")
        if replica.exists():
            shutil.copyfile(replica, self.tmp)
        else:
            self.tmp.write_bytes(b"")
        self.fd = os.open(self.tmp, os.O_RDWR)

    def write(self, indices: list[int], ps: int, payload: bytes) -> None:
        if len(payload) != len(indices) * ps:
            raise WireError("malformed", f"{len(payload)} bytes for {len(indices)} page(s) of {ps}")
        for n, i in enumerate(indices):
            os.pwrite(self.fd, payload[n * ps:(n + 1) * ps], i * ps)

    def commit(self, size: int, want: str) -> None:
        """Truncate to the image's size, make it durable, prove it is the image, swap it in atomically."""
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        got = digest(self.tmp.read_bytes())
        if got != want:
            self.tmp.unlink(missing_ok=True)
            raise WireError("apply-failed", f"staged image is {got[:12]}, the primary's is {want[:12]}")
        for side in SIDE_FILES:  # a journal of the old file would be "rolled back" into the new one
            Path(str(self.replica) + side).unlink(missing_ok=True)
        os.replace(self.tmp, self.replica)
        fsync_dir(str(self.replica.parent))

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


def follow_sqlite(f: follower.Follower, channel: Channel, epoch: int) -> None:
    f.authorize(epoch)
    replica = f.ctx.path(f.service, f.ds)
    replica.parent.mkdir(parents=True, exist_ok=True)
    Path(str(replica) + ".repl-tmp").unlink(missing_ok=True)  # a round a kill interrupted
    have = describe(replica)
    channel.send("subscribe", have=have)
    current = have["digest"] if have else None
    if have:
        f.publish(have["size"], None, None, current, epoch)
    staging: Staging | None = None
    try:
        while True:
            if f.stopped:
                raise follower.Stopped
            msg = channel.recv()
            if msg.kind == "pages":
                if msg.get("epoch") != epoch:
                    raise WireError("stale-epoch", f"frame of epoch {msg.get('epoch')} in a session of epoch {epoch}")
                f.authorize(epoch)
                f.ctx.raise_highest(f.service, epoch, f.primary, f.source)
                if staging is None:
                    staging = Staging(replica)
                staging.write(list(msg.get("indices") or []), int(msg.get("page_size")), msg.payload)
                if msg.get("last"):
                    staging.commit(int(msg.get("size")), str(msg.get("digest")))
                    staging = None
                    current = str(msg.get("digest"))
                    channel.send("ack", digest=current)
                    f.publish(int(msg.get("size")), None, None, current, epoch)
            elif msg.kind == "idle":
                channel.send("ack", digest=current)
            elif msg.kind == "end":
                raise Closed(f"the primary ended the session: {msg.get('reason')}")
            else:
                raise WireError("malformed", f"unexpected {msg.kind} frame")
    finally:
        if staging is not None:
            staging.abort()


follower.SESSIONS["sqlite"] = follow_sqlite
