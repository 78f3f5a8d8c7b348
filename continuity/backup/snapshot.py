"""Taking a snapshot: walk sources, store new content, write trees, commit the record last.

Why it is shaped this way:

* The main thread only walks and stats; file contents are read, chunked,
  hashed, compressed and sealed by a thread pool (BLAKE3, zstd and AES-GCM
  release the GIL). Small files are batched so the per-task overhead is paid
  per few MiB, not per file.
* Unchanged files (same size, mtime, ctime and inode as in the parent
  snapshot) are never opened: their node is copied from the parent, which is
  what makes a re-snapshot of an unchanged tree cost little more than a walk.
* The snapshot record is written only after every pack and the index are
  durable, so a crash (kill -9 anywhere) never lists a partial snapshot.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import blake3

from continuity.backup import sources as src_mod
from continuity.backup.chunker import SPLIT_THRESHOLD, Chunker
from continuity.backup.locks import Lock
from continuity.backup.repository import DATA, TREE, DamagedError, PackWriter, Repository

Progress = Callable[[int, int], None]
BATCH_BYTES = 4 * 1024 * 1024
BATCH_FILES = 256
_TLS = threading.local()


@dataclass(frozen=True)
class Source:
    kind: str  # directory | sqlite | ledger
    path: str
    name: str | None = None


@dataclass
class _Job:
    """One unit of pool work: several small files or one large file, plus their nodes to fill in."""

    items: list[tuple[dict[str, Any], str | bytes]] = field(default_factory=list)
    size: int = 0


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


class Archiver:
    def __init__(self, repo: Repository, *, workers: int | None = None, progress: Progress | None = None,
                 parent_trees: bool = True) -> None:
        self.repo = repo
        self.workers = workers or max(2, min(4, (os.cpu_count() or 2) + 1))
        self.progress = progress
        self.packer = PackWriter(repo)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="snap")
        self.inflight = threading.BoundedSemaphore(self.workers * 2)
        self.futures: list[Future[None]] = []
        self.errors: list[str] = []
        self.batch = _Job()
        self.done_bytes = 0
        self.total_bytes = 0
        self.stats = {"files_new": 0, "files_changed": 0, "files_unmodified": 0, "dirs": 0,
                      "bytes_read": 0, "bytes_total": 0}
        self._stat_lock = threading.Lock()
        self._last_progress = 0.0
        self.seed = repo.keyring.chunker_seed
        self.known = repo.index.entries  # blob id -> location; content of unchanged files must be here

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
        try:
            for node, what in job.items:
                try:
                    if isinstance(what, bytes):
                        self._content_bytes(node, what)
                    elif node["size"] < SPLIT_THRESHOLD:
                        with open(what, "rb") as f:
                            data = f.read()
                        self._content_bytes(node, data)
                    else:
                        self._content_stream(node, what)
                except OSError as exc:
                    node["_error"] = f"{what}: {exc.strerror or exc}"
                with self._stat_lock:
                    self.done_bytes += node.get("size", 0)
        finally:
            self.inflight.release()

    def _content_bytes(self, node: dict[str, Any], data: bytes) -> None:
        content: list[str] = []
        for piece in _chunker(self.seed).chunks(data):
            self._store(piece, content)
        node["content"] = content
        node["size"] = len(data)
        node["hash"] = blake3.blake3(data, max_threads=1).hexdigest()
        with self._stat_lock:
            self.stats["bytes_read"] += len(data)

    def _content_stream(self, node: dict[str, Any], path: str) -> None:
        content: list[str] = []
        h = blake3.blake3(max_threads=1)
        size = 0
        with open(path, "rb") as f:
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
    def _submit(self, job: _Job) -> None:
        while not self.inflight.acquire(timeout=0.2):
            self._report()
        self.futures.append(self.pool.submit(self._run, job))
        self._report()

    def _flush_batch(self) -> None:
        if self.batch.items:
            job, self.batch = self.batch, _Job()
            self._submit(job)

    def add_file(self, node: dict[str, Any], what: str | bytes, size: int) -> None:
        self.total_bytes += size
        if size >= SPLIT_THRESHOLD:
            self._submit(_Job([(node, what)], size))
            return
        self.batch.items.append((node, what))
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
        self._flush_batch()
        for f in self.futures:
            while True:
                try:
                    f.result(timeout=0.2)
                    break
                except TimeoutError:
                    self._report()
        self.futures.clear()
        self._report(force=True)

    # ----------------------------------------------------------------- directory walk
    def scan_dir(self, path: str, name: str, parent: dict[str, Any] | None) -> dict[str, Any]:
        """Node for directory ``path``; file contents are filled in later by the pool."""
        st = os.lstat(path)
        node = _meta(name, st)
        node["type"] = "dir"
        self.stats["dirs"] += 1
        old: dict[str, dict[str, Any]] = {}
        if parent and parent.get("type") == "dir" and parent.get("subtree"):
            try:
                old = {n["name"]: n for n in self.repo.load_tree(parent["subtree"])}
            except DamagedError:
                old = {}
        children: list[dict[str, Any]] = []
        same = bool(old) and bytes.fromhex(parent["subtree"]) in self.known if parent else False
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            self.errors.append(f"{path}: {exc.strerror}")
            entries = []
        for entry in entries:
            try:
                est = entry.stat(follow_symlinks=False)
            except OSError as exc:
                self.errors.append(f"{entry.path}: {exc.strerror}")
                continue
            prev_child = old.get(entry.name)
            child = self.scan_entry(entry.path, entry.name, est, prev_child)
            if child is not None:
                children.append(child)
                same = same and prev_child is not None and (
                    child is prev_child or child.get("_reuse") is not None or child == prev_child)
        node["_children"] = children
        if (parent and same and len(children) == len(old)
                and all(node[k] == parent.get(k) for k in ("mode", "mtime", "uid", "gid"))):
            # nothing below changed: the parent's tree blob is this tree, no need to serialise it again
            node["_reuse"] = parent["subtree"]
        return node

    def scan_entry(self, path: str, name: str, st: os.stat_result,
                   prev: dict[str, Any] | None) -> dict[str, Any] | None:
        if stat.S_ISDIR(st.st_mode):
            return self.scan_dir(path, name, prev)
        if stat.S_ISLNK(st.st_mode):
            node = _meta(name, st)
            node["type"] = "symlink"
            node["target"] = os.readlink(path)
            return node
        if not stat.S_ISREG(st.st_mode):
            return None  # sockets, fifos, devices: nothing a restore could meaningfully recreate
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
        self.stats["files_changed" if prev else "files_new"] += 1
        self.add_file(node, path, st.st_size)
        return node

    # ----------------------------------------------------------------- trees
    def save_tree(self, node: dict[str, Any], where: str) -> None:
        """Post-order: serialise children, save the tree blob, drop transient fields."""
        kids = node.pop("_children")
        reuse = node.pop("_reuse", None)
        if reuse is not None:
            node["subtree"] = reuse
            return
        clean = []
        for child in kids:
            if child.get("type") == "dir":
                self.save_tree(child, f"{where}/{child['name']}")
            err = child.pop("_error", None)
            if err:
                self.errors.append(err)
                continue
            clean.append(child)
        data = json.dumps({"nodes": clean}, sort_keys=True, separators=(",", ":")).encode()
        node["subtree"] = self.packer.save(TREE, data).hex()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


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


def take_snapshot(repo: Repository, sources: list[Source], *, set_name: str | None = None,
                  node_name: str | None = None, tags: list[str] | None = None, task_key: str | None = None,
                  progress: Progress | None = None, workers: int | None = None,
                  force_full: bool = False) -> dict[str, Any]:
    """Take one snapshot; returns a JSON-ready summary (``id``, counts, ``errors`` for partial sources).

    With ``task_key`` the call is idempotent: if a snapshot of this set already
    carries that key (a redelivered task), it is returned instead of a new one.
    """
    started = time.time()
    hostname = node_name or socket.gethostname()
    snaps, _bad = repo.load_snapshots()
    if task_key:
        for s in snaps:
            if s.get("task_key") == task_key and s.get("set") == set_name:
                return {**s.get("summary", {}), "id": s["id"], "reused": True}
    paths = sorted(os.path.abspath(s.path) for s in sources)
    parent = None if force_full else find_parent(snaps, set_name, hostname, paths)
    parent_root: dict[str, dict[str, Any]] = {}
    if parent:
        try:
            parent_root = {n["name"]: n for n in repo.load_tree(parent["tree"])}
        except DamagedError:
            parent_root = {}
    with Lock(repo.backend, exclusive=False, operation="snapshot") as lock:
        arch = Archiver(repo, workers=workers, progress=progress)
        tmpdir = tempfile.mkdtemp(prefix="continuity-snap-")
        manifests: list[dict[str, Any]] = []
        roots: list[dict[str, Any]] = []
        try:
            for source, name in zip(sources, _unique_names(sources), strict=True):
                path = os.path.abspath(source.path)
                entry: dict[str, Any] = {"kind": source.kind, "path": path, "name": name}
                manifests.append(entry)
                try:
                    node = _scan_source(arch, source.kind, path, name, parent_root.get(name), tmpdir, entry)
                except src_mod.SourceError as exc:
                    arch.errors.append(str(exc))
                    entry["error"] = str(exc)
                    continue
                except FileNotFoundError:
                    arch.errors.append(f"{path}: no such file or directory")
                    entry["error"] = "missing"
                    continue
                if node is not None:
                    roots.append(node)
            arch.wait()
            root = {"name": "", "type": "dir", "_children": roots}
            arch.save_tree(root, "")
            packs = arch.packer.finish()
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
        summary = {
            **arch.stats,
            "files": arch.stats["files_new"] + arch.stats["files_changed"] + arch.stats["files_unmodified"],
            "data_added": arch.packer.bytes_added,
            "blobs_added": arch.packer.blobs_added,
            "packs_added": len(packs),
            "duration": round(time.time() - started, 3),
            "errors": arch.errors,
        }
        record = {
            "version": 1, "time": now_iso(), "hostname": hostname, "username": _user(), "paths": paths,
            "tags": sorted(tags or []), "set": set_name, "tree": root["subtree"],
            "parent": parent["id"] if parent else None, "task_key": task_key, "sources": manifests,
            "summary": summary,
        }
        sid = repo.save_file("snapshots", record)
        summary["notes"] = lock.notes
    return {**summary, "id": sid, "short_id": sid[:8], "parent": record["parent"], "set": set_name,
            "time": record["time"], "reused": False}


def _scan_source(arch: Archiver, kind: str, path: str, name: str, prev: dict[str, Any] | None,
                 tmpdir: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    if kind == "directory":
        st = os.lstat(path)
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


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
