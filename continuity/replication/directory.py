"""Directory replication: a manifest at the declared cadence, content-defined chunks, only changes travel.

Each round the primary walks the directory and describes every regular file
as a list of chunks cut by the backup engine's content-defined chunker
(:mod:`continuity.backup.chunker`, FastCDC): a file that did not change (same
size, mtime and inode) keeps its chunk list without being read again, and one
that changed is cut again — an insertion moves only the chunks around it, so a
big file with a small edit costs a few chunks, not the file. The standby answers
the manifest with the chunks it lacks (it knows what its own files are made of,
from its manifest of the last round, or by cutting its files with the same
chunker when that is lost), the primary sends only those, and the standby
rebuilds each changed file beside it and renames it into place, deletes what the
primary no longer has, and acknowledges the manifest's digest.

The chunker's seed is derived from the fleet, service and source names, so both
ends (and a standby after a failover) cut the same content the same way; the
seed keeps boundaries from leaking content only for backups, whose repositories
sit with third parties, while replication stays between the fleet's own nodes
(and is encrypted on the wire when configured).

Consistency: each file is replaced atomically (temp file, fsync, rename) and
the round's directories are fsync'd; a round is not a snapshot across files —
directories hold files the service writes independently (keys, attachments).
A file that changes while the primary reads it is sent in the next round.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuity.backup.chunker import Chunker
from continuity.backup.storage.local import fsync_dir
from continuity.replication import follower, server
from continuity.replication.context import Context
from continuity.replication.handshake import Hello
from continuity.replication.wire import Channel, Closed, Message, WireError

MIN_CHUNK, AVG_CHUNK, MAX_CHUNK = 64 * 1024, 256 * 1024, 1024 * 1024
FRAME_BYTES = 8 * 1024 * 1024
TMP_SUFFIX = ".repl-tmp"


def chunker_for(fleet: str, service: str, source: str) -> Chunker:
    seed = int.from_bytes(hashlib.sha256(f"{fleet}|{service}|{source}".encode()).digest()[:8], "big") >> 1
    return Chunker(seed or 1, min_size=MIN_CHUNK, avg_size=AVG_CHUNK, max_size=MAX_CHUNK)


def chunk_id(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class FileEntry:
    size: int
    mode: int
    mtime_ns: int
    chunks: tuple[tuple[str, int], ...]  # (id, length) in file order

    def as_json(self) -> dict[str, Any]:
        return {"size": self.size, "mode": self.mode, "mtime_ns": self.mtime_ns,
                "chunks": [list(c) for c in self.chunks]}

    @staticmethod
    def from_json(doc: Any) -> FileEntry:
        try:
            chunks = tuple((str(c), int(n)) for c, n in doc["chunks"])
            entry = FileEntry(int(doc["size"]), int(doc["mode"]) & 0o777, int(doc["mtime_ns"]), chunks)
        except (KeyError, TypeError, ValueError):
            raise WireError("malformed", "a manifest entry that is not one") from None
        if sum(n for _, n in chunks) != entry.size:
            raise WireError("malformed", "a manifest entry whose chunks do not add up to its size")
        return entry


def manifest_digest(files: dict[str, FileEntry]) -> str:
    doc = {k: v.as_json() for k, v in sorted(files.items())}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def safe_rel(rel: str) -> str:
    """A manifest path as received: relative, normalised, never leaving the directory."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in rel:
        raise WireError("malformed", f"unsafe path in a manifest: {rel!r}")
    return rel


class Scanner:
    """A directory's manifest, re-cutting only files whose size, mtime or inode changed since the last scan."""

    def __init__(self, root: Path, chunker: Chunker) -> None:
        self.root = root
        self.chunker = chunker
        self.cache: dict[str, tuple[tuple[int, int, int], FileEntry]] = {}

    def scan(self) -> dict[str, FileEntry]:
        out: dict[str, FileEntry] = {}
        if not self.root.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(TMP_SUFFIX):
                    continue
                path = Path(dirpath) / name
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                rel = path.relative_to(self.root).as_posix()
                key = (st.st_size, st.st_mtime_ns, st.st_ino)
                hit = self.cache.get(rel)
                if hit is not None and hit[0] == key:
                    out[rel] = hit[1]
                    continue
                try:
                    with open(path, "rb") as fh:
                        chunks = tuple((chunk_id(c), len(c)) for c in self.chunker.stream(fh))
                except FileNotFoundError:
                    continue
                entry = FileEntry(sum(n for _, n in chunks), st.st_mode & 0o777, st.st_mtime_ns, chunks)
                self.cache[rel] = (key, entry)
                out[rel] = entry
        for gone in set(self.cache) - set(out):
            del self.cache[gone]
        return out


def locate(files: dict[str, FileEntry]) -> dict[str, tuple[str, int, int]]:
    """Chunk id -> (file, offset, length) of one place it can be read from."""
    where: dict[str, tuple[str, int, int]] = {}
    for rel, entry in files.items():
        off = 0
        for cid, n in entry.chunks:
            where.setdefault(cid, (rel, off, n))
            off += n
    return where


def read_chunk(root: Path, where: tuple[str, int, int]) -> bytes:
    rel, off, n = where
    with open(root / rel, "rb") as fh:
        fh.seek(off)
        return fh.read(n)


# --- the primary's side -----------------------------------------------------------------------------------------
def serve_directory(ctx: Context, channel: Channel, hello: Hello, epoch: int, first: Message) -> None:
    if first.kind != "subscribe":
        raise WireError("malformed", f"expected subscribe, got {first.kind}")
    ds = ctx.source(hello.service, hello.source)
    assert ds is not None
    root = ctx.path(hello.service, ds)
    scanner = Scanner(root, chunker_for(ctx.bp.model.fleet, hello.service, hello.source))
    rs = ctx.round_stream(hello.service, hello.source)
    held = first.get("have")
    rs.connected(hello.standby, held if isinstance(held, str) else None)

    def round_once() -> bool:
        nonlocal held
        files = scanner.scan()
        d = manifest_digest(files)
        rs.seen(d, sum(e.size for e in files.values()))
        if d == held:
            return False
        if _round(channel, epoch, root, files, d, rs, hello.standby):
            held = d
        return True

    try:
        server.serve_rounds(ctx, channel, hello, epoch, ds.every(), round_once)
    finally:
        rs.disconnected(hello.standby)


def _round(channel: Channel, epoch: int, root: Path, files: dict[str, FileEntry], d: str, rs: Any,
           standby: str) -> bool:
    """One manifest, the chunks the standby asks for, its acknowledgement; False if a file changed meanwhile."""
    channel.send("manifest", epoch=epoch, digest=d, files={k: v.as_json() for k, v in files.items()})
    msg = channel.recv()
    if msg.kind != "need":
        raise WireError("malformed", f"expected need, got {msg.kind}")
    where = locate(files)
    need = [c for c in (msg.get("chunks") or []) if c in where]
    rs.sending(standby, sum(where[c][2] for c in need))
    batch: list[str] = []
    payload = bytearray()
    for n, cid in enumerate(need):
        try:
            data = read_chunk(root, where[cid])
        except OSError:
            data = b""
        if chunk_id(data) != cid:  # the file changed since the scan: this round is void, the next one sends it
            channel.send("abort", epoch=epoch, reason="a file changed while it was being sent")
            server.expect_ack(channel)
            return False
        batch.append(cid)
        payload += data
        if len(payload) >= FRAME_BYTES or n == len(need) - 1:
            channel.send("chunks", bytes(payload), epoch=epoch, ids=batch)
            batch, payload = [], bytearray()
    channel.send("commit", epoch=epoch, digest=d)
    server.expect_ack(channel, d)
    rs.acked(standby, d)
    return True


server.SERVERS["directory"] = serve_directory


# --- the standby's side -----------------------------------------------------------------------------------------
class Mirror:
    """The standby's copy of a directory and the manifest of its last applied round."""

    def __init__(self, root: Path, state: Path, chunker: Chunker) -> None:
        self.root = root
        self.state = state  # its manifest, kept outside the directory (the directory is the primary's content)
        self.scanner = Scanner(root, chunker)
        self.files: dict[str, FileEntry] = {}
        self.digest: str | None = None

    def load(self) -> None:
        """What the copy holds: the saved manifest where the files still match it, else their cut again."""
        saved: dict[str, FileEntry] = {}
        try:
            doc = json.loads(self.state.read_text())
            saved = {k: FileEntry.from_json(v) for k, v in doc.get("files", {}).items()}
        except (OSError, ValueError, WireError, AttributeError):
            pass
        for path in self.root.rglob(f"*{TMP_SUFFIX}") if self.root.is_dir() else []:
            path.unlink(missing_ok=True)  # a round a kill interrupted
        for rel, entry in saved.items():  # seed the scanner: unchanged files are not read again
            try:
                st = os.lstat(self.root / rel)
            except OSError:
                continue
            if st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns:
                self.scanner.cache[rel] = ((st.st_size, st.st_mtime_ns, st.st_ino), entry)
        self.files = self.scanner.scan()
        self.digest = manifest_digest(self.files) if self.files or self.root.is_dir() else None

    def need(self, files: dict[str, FileEntry]) -> list[str]:
        have = locate(self.files)
        want = {cid for e in files.values() for cid, _ in e.chunks}
        return sorted(want - set(have))

    def apply(self, files: dict[str, FileEntry], received: dict[str, bytes], d: str) -> None:
        """Rebuild changed files beside themselves, then rename them all in, delete what is gone, save the manifest."""
        have = locate(self.files)
        self.root.mkdir(parents=True, exist_ok=True)
        staged: list[tuple[Path, Path, FileEntry]] = []
        try:
            for rel, entry in sorted(files.items()):
                cur = self.files.get(rel)
                dest = self.root / safe_rel(rel)
                if cur is not None and cur.chunks == entry.chunks and cur.mode == entry.mode:
                    if cur.mtime_ns != entry.mtime_ns:  # same bytes, touched on the primary
                        os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns))
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=TMP_SUFFIX, dir=dest.parent)
                staged.append((Path(tmp), dest, entry))  # listed first: removed if anything below fails
                with os.fdopen(fd, "wb") as out:
                    for cid, _ in entry.chunks:
                        data = received.get(cid)
                        if data is None:
                            if cid not in have:
                                raise WireError("apply-failed", f"chunk {cid} of {rel} was neither sent nor held")
                            data = read_chunk(self.root, have[cid])
                            if chunk_id(data) != cid:
                                raise WireError("apply-failed", f"local chunk of {have[cid][0]} changed under us")
                        out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, entry.mode)
                os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
        except BaseException:
            for tmp, _, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        touched = {self.root}
        for tmp, dest, _ in staged:
            if dest.is_dir() and not dest.is_symlink():
                raise WireError("apply-failed", f"{dest} is a directory here, a file on the primary")
            os.replace(tmp, dest)
            touched.add(dest.parent)
        for rel in sorted(set(self.files) - set(files), reverse=True):
            (self.root / rel).unlink(missing_ok=True)
            touched.add((self.root / rel).parent)
        for parent in sorted(touched, key=lambda p: len(p.parts), reverse=True):
            if parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                continue
            if parent.is_dir():
                fsync_dir(str(parent))
        self._save(files, d)

    def _save(self, files: dict[str, FileEntry], d: str) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"digest": d, "files": {k: v.as_json() for k, v in files.items()}}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state)
        self.scanner.cache.clear()
        for rel, entry in files.items():  # what the copy now is, without reading it again
            st = os.lstat(self.root / rel)
            self.scanner.cache[rel] = ((st.st_size, st.st_mtime_ns, st.st_ino), entry)
        self.files, self.digest = dict(files), d


def take_chunks(ids: list[str], payload: bytes, sizes: dict[str, int]) -> dict[str, bytes]:
    """The chunks of one frame, each checked to be what the manifest names (its id is its hash)."""
    out, off = {}, 0
    for cid in ids:
        size = sizes.get(cid)
        if size is None:
            raise WireError("malformed", f"chunk {cid} is in no file of the manifest")
        data = payload[off:off + size]
        if chunk_id(data) != cid:
            raise WireError("malformed", f"chunk {cid} does not hash to its id")
        out[cid] = data
        off += size
    if off != len(payload):
        raise WireError("malformed", f"{len(payload) - off} bytes in a chunks frame that belong to no chunk")
    return out


def follow_directory(f: follower.Follower, channel: Channel, epoch: int) -> None:
    f.authorize(epoch)
    root = f.ctx.path(f.service, f.ds)
    state = root.parent / ".replica" / f"{f.source}.manifest.json"
    mirror = Mirror(root, state, chunker_for(f.ctx.bp.model.fleet, f.service, f.source))
    mirror.load()
    channel.send("subscribe", have=mirror.digest)
    if mirror.digest:
        f.publish(sum(e.size for e in mirror.files.values()), None, None, mirror.digest, epoch)
    files: dict[str, FileEntry] = {}
    sizes: dict[str, int] = {}
    received: dict[str, bytes] = {}
    while True:
        if f.stopped:
            raise follower.Stopped
        msg = channel.recv()
        if msg.kind in ("manifest", "chunks", "commit") and msg.get("epoch") != epoch:
            raise WireError("stale-epoch", f"frame of epoch {msg.get('epoch')} in a session of epoch {epoch}")
        if msg.kind == "manifest":
            f.authorize(epoch)
            raw = msg.get("files")
            if not isinstance(raw, dict):
                raise WireError("malformed", "manifest without files")
            files = {safe_rel(k): FileEntry.from_json(v) for k, v in raw.items()}
            sizes = {cid: n for e in files.values() for cid, n in e.chunks}
            received = {}
            channel.send("need", chunks=mirror.need(files))
        elif msg.kind == "chunks":
            received.update(take_chunks(list(msg.get("ids") or []), msg.payload, sizes))
        elif msg.kind == "commit":
            f.authorize(epoch)
            f.ctx.raise_highest(f.service, epoch, f.primary, f.source)
            d = str(msg.get("digest"))
            if manifest_digest(files) != d:
                raise WireError("malformed", "commit for another manifest")
            mirror.apply(files, received, d)
            received = {}
            channel.send("ack", digest=mirror.digest)
            f.publish(sum(e.size for e in mirror.files.values()), None, None, mirror.digest, epoch)
        elif msg.kind in ("abort", "idle"):
            received = {}
            channel.send("ack", digest=mirror.digest)
        elif msg.kind == "end":
            raise Closed(f"the primary ended the session: {msg.get('reason')}")
        else:
            raise WireError("malformed", f"unexpected {msg.kind} frame")


follower.SESSIONS["directory"] = follow_directory
