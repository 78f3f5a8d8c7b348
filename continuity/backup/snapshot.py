"""Taking a snapshot: walk sources, store new content, write trees, commit the record last.

Why it is shaped this way:

* The main thread only walks and stats; file contents are read, chunked,
  hashed, compressed and sealed by other threads: large files by a pool
  (BLAKE3, zstd and AES-GCM release the GIL on large buffers), small files in
  batches of up to 256 by one thread of their own, because their work is
  mostly interpreter time and several threads would only hand the GIL around.
* The tree is streamed: a directory's tree blob is written as soon as its
  scan is over and its files' contents are in, and its nodes are dropped, so
  memory holds the directories in flight (bounded by the jobs in flight),
  not the whole tree.
* Unchanged files (same size, mtime, ctime and inode as in the parent
  snapshot) are never opened: their node is copied from the parent, which is
  what makes a re-snapshot of an unchanged tree cost little more than a walk.
* The snapshot record is written only after every pack and the index are
  durable, so a crash (kill -9 anywhere) never lists a partial snapshot.
* Sources that do not exist are skipped with a warning and the run exits 3;
  when none exists nothing is saved (exit 1), as restic does. A command
  source that fails (non-zero exit, timeout) fails the whole snapshot: a
  snapshot holding half a database dump would restore as a broken database.
"""

from __future__ import annotations

import base64
import errno
import getpass
import json
import os
import queue
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

import blake3

from continuity.backup import commands, memory
from continuity.backup import sources as src_mod
from continuity.backup.chunker import SPLIT_THRESHOLD, Chunker
from continuity.backup.excludes import Excluder
from continuity.backup.locks import Lock
from continuity.backup.repository import DATA, TREE, DamagedError, PackWriter, Repository
from continuity.errors import ContinuityError

Progress = Callable[[int, int], None]
BATCH_BYTES = 4 * 1024 * 1024
BATCH_FILES = 256
INDEX_EVERY = 32768  # blobs named by one index file written during the run (memory for the rest stays flat)
_TLS = threading.local()


@dataclass(frozen=True)
class Source:
    """One thing to snapshot. A ``command`` source has no path: its ``path`` is ``/<name>`` (as restic
    records ``--stdin-from-command``), ``argv`` is what runs, in ``cwd``, killed after ``timeout`` s."""

    kind: str  # directory | sqlite | ledger | command
    path: str
    name: str | None = None
    argv: tuple[str, ...] = ()
    timeout: float | None = None
    cwd: str | None = None

    @classmethod
    def command(cls, name: str, argv: list[str] | tuple[str, ...], *, timeout: float | None = None,
                cwd: str | None = None) -> Source:
        return cls("command", "/" + name, name, tuple(argv), timeout, cwd)


class NoSourceData(ContinuityError):
    """Not one source exists: nothing is saved (exit 1, restic's "all source directories/files do not exist")."""


class _Dir:
    """A directory whose tree blob is not written yet: its scan is running, or content of its files is pending.

    ``pending`` counts what must finish first: one token for its own scan, one per file job item and one per
    subdirectory not yet flushed. At zero the tree blob is written and the children are dropped, so memory
    holds the directories being scanned or waiting for content, never the whole tree.
    """

    __slots__ = ("node", "children", "parent", "pending")

    def __init__(self, node: dict[str, Any], parent: _Dir | None) -> None:
        self.node = node
        self.children: list[dict[str, Any]] = []
        self.parent = parent
        self.pending = 1


@dataclass
class _Job:
    """One unit of pool work: several small files or one large file, plus their nodes and directories."""

    items: list[tuple[dict[str, Any], str | bytes, _Dir]] = field(default_factory=list)
    size: int = 0
    large: bool = False  # one file of SPLIT_THRESHOLD or more: chunked, for the pool of several threads
    error: BaseException | None = None


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _chunker(seed: int) -> Chunker:
    c = getattr(_TLS, "chunker", None)
    if c is None or c.seed != seed:
        c = _TLS.chunker = Chunker(seed)
    return c


def _meta(name: str, st: os.stat_result) -> dict[str, Any]:
    return {"name": name, "mode": stat.S_IMODE(st.st_mode), "mtime": st.st_mtime_ns, "uid": st.st_uid,
            "gid": st.st_gid}


_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES}


def read_xattrs(path: str, warnings: list[str]) -> dict[str, str] | None:
    """Extended attributes of a file or directory (not followed through symlinks), values in base64.

    Like restic: every namespace is read (the restore decides what it may set); a file system without
    xattrs, or a listing we may not read, means none; one attribute that cannot be read is a warning.
    """
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_XATTRS:
            warnings.append(f"{path}: cannot list extended attributes: {exc.strerror}")
        return None
    if not names:
        return None
    out = {}
    for name in sorted(names):
        try:
            out[name] = base64.b64encode(os.getxattr(path, name, follow_symlinks=False)).decode()
        except OSError as exc:
            warnings.append(f"{path}: cannot read extended attribute {name}: {exc.strerror}")
    return out or None


class Archiver:
    def __init__(self, repo: Repository, *, workers: int | None = None, progress: Progress | None = None,
                 parent_trees: bool = True, excluder: Excluder | None = None) -> None:
        self.repo = repo
        self.excluder = excluder
        self.source_dev: int | None = None  # device of the source being walked (--one-file-system)
        self.workers = workers or max(2, min(4, (os.cpu_count() or 2) + 1))
        self.progress = progress
        self.packer = PackWriter(repo, index_every=INDEX_EVERY)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="snap")
        # one thread for batches of small files: their work is mostly Python holding the GIL, and more threads
        # only pass the GIL around (futex calls by the million); large files release it in BLAKE3, zstd and AES
        self.small_pool = ThreadPoolExecutor(1, thread_name_prefix="snap-small")
        self.max_jobs = self.workers * 2  # jobs queued or running: bounds the bytes and nodes held for them
        self.outstanding = 0
        self._done: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.errors: list[str] = []
        self.skipped: list[dict[str, str]] = []  # entries not stored by design (sockets), reported not hidden
        self.warnings: list[str] = []  # what was stored without a detail (an unreadable xattr)
        self.batch = _Job()
        self.done_bytes = 0
        self.total_bytes = 0
        self.stats = {"files_new": 0, "files_changed": 0, "files_unmodified": 0, "dirs": 0, "special": 0,
                      "bytes_read": 0, "bytes_total": 0}
        self._stat_lock = threading.Lock()
        self._last_progress = 0.0
        self.seed = repo.keyring.chunker_seed
        self.known = repo.index.entries  # blob id -> location; content of unchanged files must be here
        self.root = _Dir({"name": "", "type": "dir"}, None)  # the snapshot's top tree: one child per source

    # ----------------------------------------------------------------- content work (pool threads)
    def _store(self, data: bytes | memoryview, content: list[str]) -> None:
        repo, packer = self.repo, self.packer
        bid = repo.blob_id(data)
        if packer.reserve(bid):
            try:
                sealed = repo.seal_blob(bid, DATA, data)
            except BaseException:
                packer.unreserve(bid)
                raise
            packer.add(bid, DATA, sealed, len(data))
        content.append(bid.hex())

    def _run(self, job: _Job) -> None:
        """Fill in the content of every node of ``job``; the job then goes back to the main thread."""
        try:
            if job.large:
                self._run_items(job)
            else:
                self._run_small(job)
        except BaseException as exc:  # raised again by the main thread, which owns the snapshot
            job.error = exc
        finally:
            self._done.put(job)

    def _run_small(self, job: _Job) -> None:
        """A batch of files under SPLIT_THRESHOLD: each is one blob. The same steps as :meth:`_content_bytes`
        written out in one loop, with the counters updated once a batch: at ~50 µs of interpreter time a
        file, calls and lock round trips per file were a tenth of a small-file snapshot."""
        repo, packer, known = self.repo, self.packer, self.known
        key, hasher, seal = repo.keyring.id_key, blake3.blake3, repo.seal_blob
        read = 0
        for node, what, _dir in job.items:
            try:
                data = what if isinstance(what, bytes) else _read_small(what, node["size"])
            except OSError as exc:
                node["_error"] = f"{what}: {exc.strerror or exc}"
                continue
            if len(data) >= SPLIT_THRESHOLD:  # grew past the threshold since the walk: chunk it
                self._content_bytes(node, data)
                continue
            if data:
                bid = hasher(data, key=key, max_threads=1).digest()
                if bid not in known and packer.reserve(bid):
                    try:
                        sealed = seal(bid, DATA, data)
                    except BaseException:
                        packer.unreserve(bid)
                        raise
                    packer.add(bid, DATA, sealed, len(data))
                node["content"] = [bid.hex()]
            else:
                node["content"] = []
            node["size"] = len(data)
            read += len(data)
        with self._stat_lock:
            self.stats["bytes_read"] += read
            self.done_bytes += read

    def _run_items(self, job: _Job) -> None:
        """A large file (or captured bytes): chunked, stored piece by piece."""
        for node, what, _dir in job.items:
            try:
                if isinstance(what, bytes):
                    self._content_bytes(node, what)
                else:
                    self._content_stream(node, what)
            except OSError as exc:
                node["_error"] = f"{what}: {exc.strerror or exc}"
            with self._stat_lock:
                self.done_bytes += node.get("size", 0)

    def _content_bytes(self, node: dict[str, Any], data: bytes) -> None:
        """Content of a small file (or a captured ledger): one blob, or several when it is large.

        A one-blob file records no separate ``hash``: its blob id is a keyed hash of exactly the file's
        bytes, and the restore drill checks the restored file against that instead (one hash per file,
        not two).
        """
        content: list[str] = []
        if len(data) < SPLIT_THRESHOLD:
            if data:
                self._store(data, content)
        else:
            for piece in _chunker(self.seed).chunks(data):
                self._store(piece, content)
            node["hash"] = blake3.blake3(data, max_threads=1).hexdigest()
        node["content"] = content
        node["size"] = len(data)
        with self._stat_lock:
            self.stats["bytes_read"] += len(data)

    def _content_stream(self, node: dict[str, Any], path: str) -> None:
        with open(open_source(path), "rb") as f:
            self.content_from(node, f)

    def content_from(self, node: dict[str, Any], f: BinaryIO) -> None:
        """Chunk, store and hash a stream (a large file, a command's stdout) piece by piece."""
        content: list[str] = []
        h = blake3.blake3(max_threads=1)
        size = 0
        for piece in _chunker(self.seed).stream(f):
            h.update(piece)
            size += len(piece)
            self._store(piece, content)
        node["content"] = content
        node["size"] = size
        node["hash"] = h.hexdigest()
        with self._stat_lock:
            self.stats["bytes_read"] += size

    # ----------------------------------------------------------------- scheduling (main thread)
    def _reap(self, block: bool) -> bool:
        """Take back one finished job (waiting for one with ``block``): count its items done in their
        directories, flushing every directory that has nothing pending left. False when none was ready."""
        try:
            job = self._done.get(timeout=0.2) if block else self._done.get_nowait()
        except queue.Empty:
            self._report()
            return False
        self.outstanding -= 1
        if job.error is not None:
            raise job.error
        for _node, _what, d in job.items:
            self._release(d)
        return True

    def _submit(self, job: _Job) -> None:
        while self.outstanding >= self.max_jobs:
            self._reap(block=True)
        while self._reap(block=False):
            pass
        self.outstanding += 1
        (self.pool if job.large else self.small_pool).submit(self._run, job)
        self._report()

    def _flush_batch(self) -> None:
        if self.batch.items:
            job, self.batch = self.batch, _Job()
            self._submit(job)

    def add_file(self, node: dict[str, Any], what: str | bytes, size: int, owner: _Dir | None = None) -> None:
        """Queue the content of file ``node`` (read from path ``what``, or the bytes ``what``) for the pool;
        ``owner`` is the directory whose tree waits for it (the snapshot's root by default)."""
        d = owner or self.root
        d.pending += 1
        self.total_bytes += size
        if size >= SPLIT_THRESHOLD:
            self._submit(_Job([(node, what, d)], size, large=True))
            return
        self.batch.items.append((node, what, d))
        self.batch.size += size
        if self.batch.size >= BATCH_BYTES or len(self.batch.items) >= BATCH_FILES:
            self._flush_batch()

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        t = time.monotonic()
        if force or t - self._last_progress > 0.1:
            self._last_progress = t
            self.progress(self.done_bytes, max(self.total_bytes, self.done_bytes))

    def wait(self) -> None:
        """Wait for every queued file; every directory but the root is flushed by then."""
        self._flush_batch()
        while self.outstanding:
            self._reap(block=True)
        self._report(force=True)

    # ----------------------------------------------------------------- trees
    def _release(self, d: _Dir | None) -> None:
        """One thing ``d`` waited for is done; write its tree when it was the last (and so on upwards)."""
        while d is not None:
            d.pending -= 1
            if d.pending or d is self.root:
                return
            self._flush_dir(d)
            d = d.parent

    def _flush_dir(self, d: _Dir) -> None:
        """Write the tree blob of a directory whose children are all complete, then let go of them."""
        node, kids = d.node, d.children
        d.children = []
        reuse = node.pop("_reuse", None)
        if reuse is not None:  # nothing below changed: the parent's tree blob is this tree
            node["subtree"] = reuse
            return
        clean = []
        for child in kids:
            err = child.pop("_error", None)
            if err:
                self.errors.append(err)
                continue
            clean.append(child)
        data = json.dumps({"nodes": clean}, sort_keys=True, separators=(",", ":")).encode()
        node["subtree"] = self.packer.save(TREE, data).hex()

    def finish_root(self) -> dict[str, Any]:
        """After :meth:`wait`: write the top tree (one node per source) and return its node."""
        if self.root.pending != 1:
            raise RuntimeError(f"snapshot tree incomplete: {self.root.pending - 1} entries pending")
        self._flush_dir(self.root)
        return self.root.node

    # ----------------------------------------------------------------- directory walk
    def scan_dir(self, path: str, name: str, parent: dict[str, Any] | None, owner: _Dir) -> dict[str, Any]:
        """Node for directory ``path``; its tree is written once its files' contents are in (see _release)."""
        st = os.lstat(path)
        node = _meta(name, st)
        node["type"] = "dir"
        if (xattrs := read_xattrs(path, self.warnings)) is not None:
            node["xattrs"] = xattrs
        self.stats["dirs"] += 1
        d = _Dir(node, owner)
        owner.pending += 1
        old: dict[str, dict[str, Any]] = {}
        if parent and parent.get("type") == "dir" and parent.get("subtree"):
            try:
                old = {n["name"]: n for n in self.repo.load_tree(parent["subtree"])}
            except DamagedError:
                old = {}
        children = d.children
        same = bool(old) and bytes.fromhex(parent["subtree"]) in self.known if parent else False
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=_entry_name)
        except OSError as exc:
            self.errors.append(f"{path}: {exc.strerror}")
            entries = []
        flt = self.excluder
        tagged = flt.tagged(path) if flt is not None and flt.tags else set()
        for entry in entries:
            if flt is not None and (flt.by_name(entry.path) or (tagged and entry.name not in tagged)):
                continue
            try:
                est = entry.stat(follow_symlinks=False)
            except OSError as exc:
                self.errors.append(f"{entry.path}: {exc.strerror}")
                continue
            prev_child = old.get(entry.name)
            elsewhere = flt.other_device(est, self.source_dev) if flt is not None else None
            if elsewhere == "skip":
                continue
            if elsewhere == "mountpoint":  # kept, empty: what is mounted there belongs to another file system
                child = _meta(entry.name, est)
                child.update(type="dir", subtree=self.packer.save(TREE, _EMPTY_TREE).hex())
                self.stats["dirs"] += 1
            else:
                child = self.scan_entry(entry.path, entry.name, est, prev_child, d)
            if child is not None:
                children.append(child)
                same = same and prev_child is not None and (
                    child is prev_child or child.get("_reuse") is not None or child == prev_child)
        del entries
        if (parent and same and len(children) == len(old)
                and all(node.get(k) == parent.get(k) for k in ("mode", "mtime", "uid", "gid", "xattrs"))):
            node["_reuse"] = parent["subtree"]
        self._release(d)  # the scan's own token
        return node

    def scan_entry(self, path: str, name: str, st: os.stat_result,
                   prev: dict[str, Any] | None, owner: _Dir | None = None) -> dict[str, Any] | None:
        owner = owner or self.root
        if stat.S_ISDIR(st.st_mode):
            return self.scan_dir(path, name, prev, owner)
        if stat.S_ISLNK(st.st_mode):
            node = _meta(name, st)
            node["type"] = "symlink"
            node["target"] = os.readlink(path)
            return node
        if not stat.S_ISREG(st.st_mode):
            return self._special(path, name, st)
        self.stats["bytes_total"] += st.st_size
        if (prev and prev.get("type") == "file" and prev.get("size") == st.st_size
                and prev.get("mtime") == st.st_mtime_ns and prev.get("ctime") == st.st_ctime_ns
                and prev.get("ino") == st.st_ino and "content" in prev
                and all(map(self.known.__contains__, map(bytes.fromhex, prev["content"])))):
            # ctime moves on every chmod/chown/write, so equal ctime means equal mode/owner too:
            # the parent's node is this node, and the file is not opened at all
            self.stats["files_unmodified"] += 1
            return prev
        node = _meta(name, st)
        node.update(type="file", size=st.st_size, ctime=st.st_ctime_ns, ino=st.st_ino)
        if (xattrs := read_xattrs(path, self.warnings)) is not None:  # a change moves ctime: seen above
            node["xattrs"] = xattrs
        if st.st_nlink > 1:  # restore links the names of one inode again (with ``dev``: inodes are per device)
            node.update(nlink=st.st_nlink, dev=st.st_dev)
        self.stats["files_changed" if prev else "files_new"] += 1
        self.add_file(node, path, st.st_size, owner)
        return node

    def _special(self, path: str, name: str, st: os.stat_result) -> dict[str, Any] | None:
        """Fifos and device nodes are recorded (restore recreates fifos and names the devices it does not
        create); a socket is not stored, it belongs to the process listening on it. Either way it is said."""
        kind = ("fifo" if stat.S_ISFIFO(st.st_mode) else "chardev" if stat.S_ISCHR(st.st_mode)
                else "blockdev" if stat.S_ISBLK(st.st_mode) else None)
        if kind is None:
            what = "socket" if stat.S_ISSOCK(st.st_mode) else f"file of type {stat.S_IFMT(st.st_mode):o}"
            self.skipped.append({"path": path, "reason": f"{what}: not stored"})
            return None
        node = _meta(name, st)
        node["type"] = kind
        if kind != "fifo":
            node["rdev"] = st.st_rdev
        self.stats["special"] += 1
        return node

    def close(self) -> None:
        self.small_pool.shutdown(wait=True)
        self.pool.shutdown(wait=True)


_EMPTY_TREE = json.dumps({"nodes": []}, sort_keys=True, separators=(",", ":")).encode()


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


_NOATIME = getattr(os, "O_NOATIME", 0)
_read_flags = os.O_RDONLY | os.O_CLOEXEC | _NOATIME


def open_source(path: str) -> int:
    """Open a file to back up without touching its access time (``O_NOATIME``, as borg and restic do).

    A backup should not change what it reads; and on a file read for the first time since it was written,
    relatime would otherwise journal an inode update per file, kernel time a small-file snapshot pays for
    every file. Only the owner (or CAP_FOWNER) may ask for it: at the first EPERM the flag is dropped.
    """
    global _read_flags
    try:
        return os.open(path, _read_flags)
    except PermissionError as exc:
        if exc.errno != errno.EPERM or not _read_flags & _NOATIME:  # EACCES: unreadable, the flag is not why
            raise
        _read_flags &= ~_NOATIME
        return os.open(path, _read_flags)


def _read_small(path: str, size: int) -> bytes:
    """A small file's bytes with one open and (normally) one read; whatever it holds now, if it changed
    size since the walk stat it (as ``f.read()`` would)."""
    fd = open_source(path)
    try:
        data = os.read(fd, size + 1)
        while 0 < len(data) <= size:  # short read before the stat's size: only at EOF on local file systems
            more = os.read(fd, size + 1 - len(data))
            if not more:
                break
            data += more
        if len(data) > size:  # grew since the stat: take all of it
            parts = [data]
            while more := os.read(fd, 1 << 20):
                parts.append(more)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


def _unique_names(sources: list[Source]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in sources:
        base = s.name or os.path.basename(os.path.normpath(os.path.abspath(s.path))) or "root"
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(base if n == 0 else f"{base}-{n + 1}")
    return out


def find_parent(snaps: list[dict[str, Any]], set_name: str | None, hostname: str,
                paths: list[str]) -> dict[str, Any] | None:
    for s in reversed(snaps):
        if set_name is not None:
            if s.get("set") == set_name:
                return s
        elif s.get("set") is None and s.get("hostname") == hostname and sorted(s.get("paths", [])) == paths:
            return s
    return None


def find_by_task_key(snaps: list[dict[str, Any]], set_name: str | None, task_key: str | None) -> dict[str, Any] | None:
    """The snapshot a (redelivered) task with ``task_key`` already made for ``set_name``, if any."""
    if not task_key:
        return None
    return next((s for s in snaps if s.get("task_key") == task_key and s.get("set") == set_name), None)


def existing_sources(sources: list[Source]) -> tuple[list[Source], list[str]]:
    """The sources that can be reached, and a warning per one that cannot (restic's ``filterExisting``).

    Raises :class:`NoSourceData` when none is left: a snapshot of nothing is not a backup.
    """
    kept, warnings = [], []
    for src in sources:
        if src.kind == "command":
            kept.append(src)
            continue
        try:
            os.lstat(src.path)
        except FileNotFoundError:
            warnings.append(f"{os.path.abspath(src.path)} does not exist, skipping")
            continue
        except OSError as exc:
            warnings.append(f"{os.path.abspath(src.path)} cannot be accessed ({exc.strerror}), skipping")
            continue
        kept.append(src)
    if not kept:
        raise NoSourceData("all source directories/files do not exist: " + "; ".join(warnings))
    return kept, warnings


def take_snapshot(repo: Repository, sources: list[Source], *, set_name: str | None = None,
                  node_name: str | None = None, tags: list[str] | None = None, task_key: str | None = None,
                  progress: Progress | None = None, workers: int | None = None,
                  force_full: bool = False, excluder: Excluder | None = None) -> dict[str, Any]:
    """Take one snapshot; returns a JSON-ready summary (``id``, counts, ``errors`` for partial sources).

    With ``task_key`` the call is idempotent: if a snapshot of this set already
    carries that key (a redelivered task), it is returned instead of a new one.
    Raises :class:`NoSourceData` when no source exists and
    :class:`~continuity.backup.commands.CommandFailed` when a command source
    fails; in both cases no snapshot is recorded.
    """
    started = time.time()
    memory.return_large_blocks()
    hostname = node_name or socket.gethostname()
    snaps, _bad = repo.load_snapshots()
    done = find_by_task_key(snaps, set_name, task_key)
    if done is not None:
        return {**done.get("summary", {}), "id": done["id"], "reused": True}
    all_sources = sources
    sources, missing = existing_sources(sources)
    paths = sorted(s.path if s.kind == "command" else os.path.abspath(s.path) for s in sources)
    parent = None if force_full else find_parent(snaps, set_name, hostname, paths)
    parent_root: dict[str, dict[str, Any]] = {}
    if parent:
        try:
            parent_root = {n["name"]: n for n in repo.load_tree(parent["tree"])}
        except DamagedError:
            parent_root = {}
    names = dict(zip(map(id, all_sources), _unique_names(all_sources), strict=True))
    with Lock(repo.backend, exclusive=False, operation="snapshot") as lock:
        arch = Archiver(repo, workers=workers, progress=progress, excluder=excluder)
        arch.errors.extend(missing)
        tmpdir = tempfile.mkdtemp(prefix="continuity-snap-")
        manifests: list[dict[str, Any]] = []
        roots = arch.root.children
        try:
            for source in sources:
                name = names[id(source)]
                path = source.path if source.kind == "command" else os.path.abspath(source.path)
                entry: dict[str, Any] = {"kind": source.kind, "path": path, "name": name}
                manifests.append(entry)
                try:
                    node = _scan_source(arch, source, path, name, parent_root.get(name), tmpdir, entry)
                except src_mod.SourceError as exc:
                    arch.errors.append(str(exc))
                    entry["error"] = str(exc)
                    continue
                except FileNotFoundError:  # vanished between the check above and now
                    arch.errors.append(f"{path}: no such file or directory")
                    entry["error"] = "missing"
                    continue
                if node is not None:
                    roots.append(node)
            arch.wait()
            root = arch.finish_root()
            packs = arch.packer.finish(update_index=False)  # the index file below is what matters
        except BaseException:
            arch.packer.abort()
            raise
        finally:
            arch.close()
            for fn in os.listdir(tmpdir):
                os.unlink(os.path.join(tmpdir, fn))
            os.rmdir(tmpdir)
        if packs or repo.index.recovered:
            repo.save_index(packs)
        packs_added = arch.packer.packs_written
        del packs
        arch.packer.written = {}
        repo.drop_index()  # it lacks this run's blobs: read again, with them, if this process needs it
        summary = {
            **arch.stats,
            "files": arch.stats["files_new"] + arch.stats["files_changed"] + arch.stats["files_unmodified"],
            "data_added": arch.packer.bytes_added,
            "blobs_added": arch.packer.blobs_added,
            "packs_added": packs_added,
            "duration": round(time.time() - started, 3),
            "errors": arch.errors,
            "skipped": arch.skipped,
            "warnings": arch.warnings + (excluder.warnings if excluder is not None else []),
        }
        record = {
            "version": 1, "time": now_iso(), "hostname": hostname, "username": _user(), "uid": os.getuid(),
            "gid": os.getgid(), "paths": paths, "tags": sorted(tags or []), "set": set_name,
            "tree": root["subtree"], "parent": parent["id"] if parent else None, "task_key": task_key,
            "sources": manifests, "summary": summary, "backup_start": _iso(started),
        }
        if excluder is not None and excluder.recorded:
            record["excludes"] = excluder.recorded
        sid = repo.save_file("snapshots", record)
        summary["notes"] = lock.notes
    return {**summary, "id": sid, "short_id": sid[:8], "parent": record["parent"], "set": set_name,
            "time": record["time"], "reused": False}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _scan_source(arch: Archiver, source: Source, path: str, name: str, prev: dict[str, Any] | None,
                 tmpdir: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    kind = source.kind
    if kind == "command":
        return _capture_command(arch, source, name, entry)
    if kind == "directory":
        st = os.lstat(path)
        arch.source_dev = st.st_dev
        return arch.scan_entry(path, name, st, prev)
    if kind == "ledger":
        st = os.stat(path)
        cap = src_mod.capture_ledger(path)
        entry["manifest"] = cap.manifest
        if cap.errors:
            entry["error"] = f"{path}: {len(cap.errors)} invalid record(s): {'; '.join(cap.errors[:3])}"
            arch.errors.append(entry["error"])
        node = _meta(name, st)
        node.update(type="file", size=len(cap.data))
        arch.stats["files_new"] += 1
        arch.stats["bytes_total"] += len(cap.data)
        arch.add_file(node, cap.data, len(cap.data))
        return node
    if kind == "sqlite":
        st = os.stat(path)
        copy = os.path.join(tmpdir, f"{id(entry):x}-{name}.sqlite")
        entry["manifest"] = src_mod.capture_sqlite(path, copy)
        data_size = os.path.getsize(copy)
        node = _meta(name, st)
        node.update(type="file", size=data_size)
        arch.stats["files_new"] += 1
        arch.stats["bytes_total"] += data_size
        arch.add_file(node, copy, data_size)
        return node
    raise src_mod.SourceError(f"{path}: unknown source kind {kind!r}")


def _capture_command(arch: Archiver, source: Source, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Store a command's stdout as the file ``name``, streamed; raise CommandFailed unless it succeeded.

    The file gets mode 0644 and the snapshot's time as its mtime (what restic's
    ``--stdin-from-command`` records). The manifest keeps the command, its exit
    status and the byte count, which the restore drill compares.
    """
    node: dict[str, Any] = {"name": name, "type": "file", "mode": 0o644, "mtime": time.time_ns(),
                            "uid": os.getuid(), "gid": os.getgid()}
    _, outcome = commands.stream(source.argv, source.timeout, lambda out: arch.content_from(node, out),
                                 cwd=source.cwd)
    entry["manifest"] = {"command": list(source.argv), "exit": outcome.returncode, "bytes": node.get("size", 0),
                         "duration": round(outcome.duration, 3)}
    if not outcome.ok:
        raise commands.CommandFailed(f"command source {name}: {outcome.describe()}; no snapshot saved")
    arch.stats["files_new"] += 1
    arch.stats["bytes_total"] += node["size"]
    return node


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
