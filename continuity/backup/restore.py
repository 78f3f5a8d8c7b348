"""Restore: every byte verified, nothing written outside the target, damage named not written.

The whole plan is built and checked before the first write: every name in
the snapshot must be a plain path component (no ``..``, no ``/``, no NUL,
no duplicates), so a crafted snapshot is refused outright rather than half
restored; and the sizes the snapshot declares must fit in the target's free
space, so a restore does not fill a disk halfway and fail there.

Content is then restored pack by pack in a thread pool; within a pack only
the needed blobs are read, batched into windows of a few MiB (see
:func:`read_windows`) rather than the whole ~16 MiB pack, so peak memory is a
window plus a blob per thread. Each blob is decrypted, decompressed no further
than the length the index declares, and hash-checked once, whatever it is read
with, and written into a hidden temporary file per file, which is renamed into
place only when all its blobs verified. Every entry — file, symlink, fifo —
goes through a temporary name and a rename, so whatever stood at its path
before (a planted symlink, a hard link to a file elsewhere) is replaced, never
written through. A file with any damaged blob is named in the result and its
temporary file deleted: a damaged file is never left looking restored.

Metadata comes back as restic brings it back: mode, mtime (symlinks' too),
hard links as hard links, ``user.*`` extended attributes (every namespace when
restoring as root), ownership as root.

What cannot be restored is said, never skipped silently: names longer than the
target filesystem allows and write errors are ``failed`` (exit 1); device
nodes and sockets, which a restore deliberately never creates, are ``skipped``
(reported, exit 0). Names that were hard links of one inode are linked again.

Ownership is restored only when running as root (as tar does); otherwise, and
whenever a chown fails, setuid/setgid bits are dropped: a restore must not
hand out setuid files owned by whoever ran it.
"""

from __future__ import annotations

import base64
import errno
import itertools
import os
import shutil
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from continuity.backup import memory
from continuity.backup.forked import ForkedWorkers
from continuity.backup.repository import DATA, DamagedError, Repository, pack_name
from continuity.backup.storage import AppendOnlyBackend, NotFound
from continuity.backup.storage.local import LocalBackend
from continuity.errors import ContinuityError

Progress = Callable[[int, int], None]


class UnsafeSnapshot(ContinuityError):
    """The snapshot names a path that would escape the target: refused, nothing written."""


class NotEnoughSpace(ContinuityError):
    """The snapshot declares more bytes than the target's filesystem has free: refused, nothing written."""


# Entries a restore reports instead of creating: a device node from a backup could open raw disks or memory
# to whoever can read the target, and a socket belongs to the process listening on it.
NOT_CREATED = {"chardev": "character device", "blockdev": "block device", "socket": "socket"}
PATH_MAX = 4096
_TMP_SEQ = itertools.count()


def check_name(name: Any, where: str) -> str:
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\x00" in name
            or (os.sep != "/" and os.sep in name)):
        raise UnsafeSnapshot(f"refusing to restore: unsafe path component {name!r} in {where or '/'}")
    return name


@dataclass(slots=True)
class _File:
    rel: str
    node: dict[str, Any]
    final: str
    remaining: int
    tmp: str | None = None  # the name written when something already stands at ``final``, else None
    written: int = 0
    create_mode: int = 0o600  # the mode asked for when the file is created
    born: tuple[int, int, int] | None = None  # (uid, gid, mode) it has once created at ``final``, if known
    damaged: list[str] = field(default_factory=list)
    error: str | None = None  # this restore could not write it here (not damage in the repository)
    meta_problem: str | None = None  # restored, but some of its metadata could not be set
    fd: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _tmp_name(directory: str) -> str:
    """A hidden name unique to this process, of fixed length: a 255-byte file name still gets a temp file."""
    return os.path.join(directory, f".continuity-restore-{os.getpid()}-{next(_TMP_SEQ)}")


def _umask() -> int | None:
    """The process's umask, read without setting it (``os.umask`` would change it for every thread for a
    moment); None where ``/proc`` does not say, and every restored file then gets its mode set explicitly."""
    try:
        with open("/proc/self/status", "rb") as f:  # bytes: no codec to import (a dropped-privilege child
            for line in f:                          # may no longer be able to read the standard library)
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def check_space(target: str, need: int) -> None:
    """Refuse up front when the declared bytes exceed what the target's filesystem has free."""
    probe = os.path.abspath(target)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if need > free:
        raise NotEnoughSpace(f"refusing to restore: the snapshot declares {_human(need)} of file data but "
                             f"{probe} has {_human(free)} free")


def _name_max(root: str) -> int:
    try:
        return int(os.pathconf(root, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def walk(repo: Repository, tree_id: str, prefix: str = "",
         damaged: list[dict[str, str]] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(relative path, node) for every node below ``tree_id``, names validated, parents first."""
    try:
        nodes = repo.load_tree(tree_id)
    except DamagedError as exc:
        if damaged is None:
            raise
        damaged.append({"path": prefix or "/", "reason": f"directory listing damaged: {exc}"})
        return
    seen: set[str] = set()
    for node in nodes:
        name = check_name(node.get("name"), prefix)
        if name in seen:
            raise UnsafeSnapshot(f"refusing to restore: duplicate name {name!r} in {prefix or '/'}")
        seen.add(name)
        rel = f"{prefix}/{name}" if prefix else name
        yield rel, node
        if node.get("type") == "dir" and node.get("subtree"):
            yield from walk(repo, node["subtree"], rel, damaged)


def read_windows(spans: list[tuple[int, int]], window: int, gap: int) -> list[tuple[int, int, list[int]]]:
    """Group ``(offset, length)`` spans of one object into reads: ``(start, end, indices into spans)``.

    Spans are taken in offset order; the next joins the current read while the
    hole before it is at most ``gap`` and the read stays within ``window``
    bytes. A span longer than ``window`` is read on its own, never split: a
    blob is authenticated as a whole.
    """
    out: list[tuple[int, int, list[int]]] = []
    for i in sorted(range(len(spans)), key=lambda k: spans[k][0]):
        off, length = spans[i]
        if out:
            start, end, members = out[-1]
            if off - end <= gap and max(end, off + length) - start <= window:
                out[-1] = (start, max(end, off + length), [*members, i])
                continue
        out.append((off, off + length, [i]))
    return out


def _selected(rel: str, includes: list[str] | None) -> bool:
    if not includes:
        return True
    return any(rel == inc or rel.startswith(inc + "/") or inc.startswith(rel + "/") for inc in includes)


BATCH_FILES = 4096  # files restored together: bounds the memory a restore holds, whatever the tree's size
BATCH_BYTES = 64 * 1024 * 1024
SMALL_FILE = 1024 * 1024  # a worker restores a batch of files all below this on one thread
PROCESS_MIN_FILES = 2 * BATCH_FILES  # a smaller restore stays in one process (forking costs more than it saves)


def _process_count(backend: Any, files: int) -> int:
    """Worker processes for a restore of ``files`` files from ``backend``: one per core (at most four) for a
    restore of several batches from a local repository. A network backend keeps its connections in this
    process (and waits on the network, which threads overlap well); a read limit is one bucket for the whole
    restore, which processes would multiply."""
    while isinstance(backend, AppendOnlyBackend):
        backend = backend.inner
    if not isinstance(backend, LocalBackend) or not hasattr(os, "fork") or files <= PROCESS_MIN_FILES:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def restore(repo: Repository, snapshot: dict[str, Any], target: str, *, includes: list[str] | None = None,
            progress: Progress | None = None, workers: int | None = None, processes: int | None = None,
            same_owner: bool | None = None) -> dict[str, Any]:
    """Restore ``snapshot`` (or the paths in ``includes``) below ``target``; returns a JSON-ready report.

    ``same_owner`` (default: running as root) restores each entry's uid/gid; without it setuid/setgid bits
    are dropped. Raises :class:`UnsafeSnapshot` or :class:`NotEnoughSpace` before writing anything.

    The tree is walked twice and never held whole: a first walk checks every name and adds up the sizes;
    the second restores files in batches of :data:`BATCH_FILES` (or :data:`BATCH_BYTES`), so memory holds
    one batch, the directories (their metadata is set last) and the names of hard-linked files.

    A restore of more than :data:`PROCESS_MIN_FILES` files from a local repository hands its batches to
    forked worker processes (``processes``, default one per core; see :mod:`continuity.backup.forked`):
    this process walks the tree, creates directories and special files, and sets directory metadata last.
    """
    started = time.time()
    memory.return_large_blocks()
    repo.lean_index()  # ids to locations is all a restore needs of the index
    same_owner = os.geteuid() == 0 if same_owner is None else same_owner
    includes = [i.strip("/") for i in includes] if includes else None
    need = files = 0
    for rel, node in walk(repo, snapshot["tree"], "", []):
        if node.get("type") == "file" and _selected(rel, includes):
            need += _int(node.get("size"))
            files += 1
    check_space(target, need)
    os.makedirs(target, exist_ok=True)
    root = os.path.realpath(target)
    run = _Run(repo, root, same_owner, progress, need)
    damaged: list[dict[str, str]] = []
    # file creation is latency-bound (the GIL is released in every syscall), so more threads than cores: on
    # a fast disk two threads restored 50,000 small files fastest (8.0 s against 10.4-11.8 s with eight),
    # but where creating a file waits on the file system (measured here after mass deletes) fewer threads
    # made a restore-heavy test take 34 s instead of 22 s; a backend whose reads wait on the network asks
    # for its own count (``read_threads``)
    threads = workers or repo.backend.read_threads or max(4, min(8, 3 * (os.cpu_count() or 2)))
    procs = _process_count(repo.backend, files) if processes is None else processes
    if procs > 1:  # forked before this process starts any thread: each worker runs its own small pool
        # two threads a worker overlap a large file's blobs; a batch of small files runs on one (see serve)
        run.threads = max(1, workers // procs) if workers else 2
        run.workers = ForkedWorkers(procs, run.serve)
    finished = False
    try:
        # with workers, this process restores no content itself: no pool of its own
        with nullcontext() if run.workers else ThreadPoolExecutor(threads) as pool:
            run.pool = pool
            for rel, node in walk(repo, snapshot["tree"], "", damaged):
                if _selected(rel, includes):
                    run.place(rel, node)
            run.flush()
            if run.workers is not None:
                for result in run.workers.drain():
                    run.merge(result)
        finished = True
    finally:
        if run.workers is not None:
            run.workers.close(kill=not finished)
    links = _relink(run.linked, run.failed)
    for path, node in reversed(run.dirs):
        if problem := _apply_meta(path, node, 0o755, same_owner):
            run.failed.append({"path": os.path.relpath(path, root), "reason": problem})
    return {
        "snapshot": snapshot["id"], "target": root,
        "files": run.ok_files, "dirs": len(run.dirs), "bytes": run.ok_bytes, "links": links,
        "damaged": damaged + run.bad, "failed": run.failed, "skipped": run.skipped,
        "duration": round(time.time() - started, 3),
    }


class _Run:
    """One restore in progress: places entries as the walk yields them and restores file contents in batches."""

    def __init__(self, repo: Repository, root: str, same_owner: bool, progress: Progress | None,
                 total: int) -> None:
        self.repo, self.root, self.same_owner, self.progress, self.total = repo, root, same_owner, progress, total
        self.name_max = _name_max(root)
        self.index = repo.index
        self.pool: ThreadPoolExecutor | None = None
        self.dirs: list[tuple[str, dict[str, Any]]] = []
        self.failed: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []
        self.bad: list[dict[str, str]] = []
        self.linked: list[_File] = []  # restored names of hard-linked inodes, linked again at the end
        self.blocked: set[str] = set()  # entries not created: nothing below them is restored either
        self.batch: list[_File] = []
        self.checked_dir = ""  # the directory of the last file placed: known to be a real directory
        self.born_gid = os.getegid()  # the group a file created in ``checked_dir`` gets
        self.euid = os.geteuid()
        self.umask = _umask()
        self.batch_bytes = 0
        self.ok_files = 0
        self.ok_bytes = 0
        self.done = 0
        self.done_lock = threading.Lock()
        self.workers: ForkedWorkers | None = None  # batches go to these processes when set
        self.threads = 1  # each worker process's pool
        self.sequential = False  # a worker's batch of small files: restored on its own thread, no pool

    def place(self, rel: str, node: dict[str, Any]) -> None:
        parent, _, name = rel.rpartition("/")
        if parent in self.blocked:
            self.blocked.add(rel)
            return
        path = os.path.join(self.root, *rel.split("/"))
        kind = node.get("type")
        problem = _placement_problem(name, path, self.name_max)
        if problem is None and kind == "dir":
            problem = _mkdir(path, report=True)
        if problem is not None:
            self.failed.append({"path": rel, "reason": problem})
            self.blocked.add(rel)
            return
        if kind == "dir":
            self.dirs.append((path, node))
            return
        directory = os.path.dirname(path)
        if directory != self.checked_dir:  # once per directory, not per file: entries come grouped by directory
            _mkdir(directory)
            self.checked_dir = directory
            st = os.lstat(directory)  # a setgid directory gives its own group to what is created in it
            self.born_gid = st.st_gid if st.st_mode & stat.S_ISGID else os.getegid()
        if kind in ("symlink", "fifo"):
            problem = _place_special(path, node, self.same_owner)
            if problem:
                self.failed.append({"path": rel, "reason": problem})
            return
        if kind in NOT_CREATED:
            self.skipped.append({"path": rel, "reason": _not_created(kind, node)})
            return
        if kind != "file":
            self.failed.append({"path": rel, "reason": f"unknown entry type {kind!r}, not restored"})
            return
        content = node.get("content") or []
        f = _File(rel, node, path, len(content))
        self._plan_creation(f)
        self.batch.append(f)
        self.batch_bytes += _int(node.get("size"))
        if len(self.batch) >= BATCH_FILES or self.batch_bytes >= BATCH_BYTES:
            self.flush()

    def _plan_creation(self, f: _File) -> None:
        """Create the file with its recorded mode when the umask leaves that mode whole and nothing must be
        set in between (no setuid/setgid/sticky bit, which only an owner restored first may keep; no extended
        attributes, which must be set while the file is still writable): then :func:`_apply_meta` skips the
        chmod, and the chown too when the new file's owner is already the recorded one. Two syscalls of a
        small file's handful. Otherwise the file is born private (0600) and gets everything set at the end."""
        if self.umask is None or f.node.get("xattrs"):
            return
        mode = _int(f.node.get("mode"), 0o644) & 0o7777
        if mode & 0o7000 or mode & self.umask or not mode & stat.S_IWUSR:
            return
        f.create_mode = mode
        f.born = (self.euid, self.born_gid, mode)

    def flush(self) -> None:
        """Restore the contents of the batched files (here, or in a worker process), keep what the report needs."""
        files, self.batch, self.batch_bytes = self.batch, [], 0
        if not files:
            return
        if self.workers is None:
            self.merge(self._restore_files(files), counted=True)
            return
        for result in self.workers.submit([(f.rel, f.node, f.final, f.remaining, f.create_mode, f.born)
                                           for f in files]):
            self.merge(result)

    def serve(self, payload: list[tuple[Any, ...]]) -> dict[str, Any]:
        """In a worker process: restore one batch sent by :meth:`flush`, with this process's own pool."""
        if self.pool is None or self.workers is not None:  # the parent's pool and workers are not this process's
            self.workers, self.progress = None, None
            self.pool = ThreadPoolExecutor(self.threads)
        before = self.done
        # small files only: their work is interpreter time between short syscalls, which a second thread in
        # this process would only take turns with (200,000 files: 10.2-10.4 s on one thread a worker, 11.4 s
        # on two); a large file's blobs decrypt, hash and write with the interpreter lock released
        self.sequential = all(_int(node.get("size")) < SMALL_FILE for _, node, *_ in payload)
        result = self._restore_files([_File(rel, node, final, remaining, create_mode=mode, born=born)
                                      for rel, node, final, remaining, mode, born in payload])
        result["done"] = self.done - before
        return result

    def merge(self, result: dict[str, Any], *, counted: bool = False) -> None:
        """Add one batch's outcome to the restore's (``counted``: its bytes are in ``done`` already)."""
        self.ok_files += result["files"]
        self.ok_bytes += result["bytes"]
        self.bad.extend(result["bad"])
        self.failed.extend(result["failed"])
        self.linked.extend(_File(rel, node, final, 0) for rel, node, final in result["linked"])
        if not counted:
            self.done += result["done"]
            if self.progress:
                self.progress(self.done, self.total)

    def _restore_files(self, files: list[_File]) -> dict[str, Any]:
        """Contents and metadata of ``files``; returns what the report needs of them."""
        out: dict[str, Any] = {"files": 0, "bytes": 0, "bad": [], "failed": [], "linked": []}
        by_pack: dict[str, list[tuple[bytes, Any, _File, int]]] = defaultdict(list)
        get = self.index.get
        for f in files:
            offset = 0
            for cid in f.node.get("content") or []:
                bid = bytes.fromhex(cid)
                e = get(bid)
                if e is None:
                    f.damaged.append(f"blob {cid[:16]} missing from the index")
                    f.remaining -= 1
                    continue
                by_pack[e.pack].append((bid, e, f, offset))
                offset += e.raw_length
        for f in files:
            if f.remaining == 0:  # empty, or every blob already known to be missing
                _open(f)
                _finish(f, self.same_owner)
        units = [unit for pack in sorted(by_pack) for unit in self._units(pack, by_pack[pack])]
        if self.sequential:
            for unit in units:
                self._restore_window(unit)
        else:
            assert self.pool is not None
            list(self.pool.map(self._restore_window, units))
        for f in files:
            if f.damaged:
                out["bad"].append({"path": f.rel, "reason": "; ".join(sorted(set(f.damaged)))})
            elif f.error:
                out["failed"].append({"path": f.rel, "reason": f.error})
            else:
                if f.meta_problem:
                    out["failed"].append({"path": f.rel, "reason": f.meta_problem})
                out["files"] += 1
                out["bytes"] += _int(f.node.get("size"))
                n = f.node
                if _int(n.get("nlink")) > 1 and "dev" in n and "ino" in n:
                    out["linked"].append((f.rel, f.node, f.final))
        return out

    def _units(self, pack: str, refs: list[tuple[bytes, Any, _File, int]]) -> list[tuple[str, int, int, list[Any]]]:
        """The reads of one pack, each with the blobs it covers and every place each blob goes: a pack's
        windows are restored by several threads, so a batch of small files in one pack still runs in parallel.
        ``refs`` carry each blob's index entry, looked up once."""
        uses: dict[bytes, tuple[Any, list[tuple[_File, int]]]] = {}
        for bid, e, f, off in refs:
            if (use := uses.get(bid)) is None:
                use = uses[bid] = (e, [])
            use[1].append((f, off))
        blobs = [(bid, e, targets) for bid, (e, targets) in uses.items()]
        backend = self.repo.backend
        return [(pack, lo, hi, [blobs[i] for i in members])
                for lo, hi, members in read_windows([(e.offset, e.length) for _, e, _ in blobs],
                                                    backend.read_window, backend.read_gap)]

    def _restore_window(self, unit: tuple[str, int, int, list[Any]]) -> None:
        # each blob decrypted once, written to every place it occurs, then dropped (bounded memory)
        pack, lo, hi, blobs = unit
        try:
            raw: bytes | None = self.repo.backend.read_range(pack_name(pack), lo, hi - lo)
        except NotFound:
            raw = None
        for bid, e, targets in blobs:
            data: bytes | memoryview | str
            if raw is None:
                data = f"pack {pack[:16]} missing"
            else:
                try:
                    data = self.repo.open_blob_view(bid, DATA, memoryview(raw)[e.offset - lo:e.offset - lo + e.length],
                                                    e.raw_length)
                except DamagedError as exc:
                    data = str(exc)
            self._deliver(data, targets)
        del raw
        if self.progress:
            self.progress(self.done, self.total)

    def _deliver(self, data: bytes | memoryview | str, targets: list[tuple[_File, int]]) -> None:
        """Write one verified blob (or its damage reason) to every place it occurs.

        The file's lock covers its bookkeeping (opening it on first data, counting what is left), never the
        write itself: the blobs of one large file go to it from several threads at once. Until this delivery
        is counted nobody closes the file, so its descriptor stays valid for the write."""
        for f, off in targets:
            with f.lock:
                if isinstance(data, str):
                    f.damaged.append(data)
                    fd = None
                else:
                    if f.fd is None and not (f.damaged or f.error):  # opened on first data: few open at once
                        _open(f)
                    fd = f.fd if not (f.damaged or f.error) else None
            if fd is not None:
                try:
                    n, problem = os.pwrite(fd, data, off), None
                except OSError as exc:
                    n, problem = 0, f"write failed: {exc.strerror or exc}"
            with f.lock:
                if fd is not None:
                    f.written += n
                    if problem is not None and f.error is None:
                        f.error = problem
                f.remaining -= 1
                last = f.remaining == 0
            if last:
                _finish(f, self.same_owner)
        if not isinstance(data, str):
            with self.done_lock:
                self.done += len(data) * len(targets)


def _relink(files: list[_File], failed: list[dict[str, str]]) -> int:
    """Names that were hard links of one inode when the snapshot was taken become hard links again.

    Each name was restored as a verified copy first; a copy is then replaced (link to a temporary name,
    rename) by a link to the first restored name of its inode, when their recorded contents agree (a
    file written to between reading its two names keeps its own copy). Returns how many links were made.
    """
    groups: dict[tuple[int, int], list[_File]] = defaultdict(list)
    for f in files:  # restored files that had more than one name
        groups[(_int(f.node["dev"]), _int(f.node["ino"]))].append(f)
    made = 0
    for first, *others in groups.values():
        for other in others:
            if any(other.node.get(k) != first.node.get(k) for k in ("hash", "content")):
                continue
            tmp = _tmp_name(os.path.dirname(other.final))
            try:
                os.link(first.final, tmp, follow_symlinks=False)
                os.replace(tmp, other.final)
                made += 1
            except OSError as exc:  # e.g. across a mount point below the target: the copy stays, and is said
                failed.append({"path": other.rel, "reason": f"restored as a copy, not as a hard link of "
                                                            f"{first.rel}: {exc.strerror or exc}"})
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    return made


def _placement_problem(name: str, path: str, name_max: int) -> str | None:
    """Why an entry cannot exist at ``path`` on this filesystem at all (checked before any syscall fails)."""
    size = len(os.fsencode(name))
    if size > name_max:
        return f"name is {size} bytes long; the target filesystem allows {name_max}"
    if len(os.fsencode(path)) >= PATH_MAX:
        return f"path is {len(os.fsencode(path))} bytes long; the limit is {PATH_MAX - 1}"
    return None


def _not_created(kind: str, node: dict[str, Any]) -> str:
    what = NOT_CREATED[kind]
    if kind in ("chardev", "blockdev"):
        rdev = _int(node.get("rdev"))
        what += f" {os.major(rdev)}:{os.minor(rdev)}"
    return f"{what} not recreated (a restore never creates device nodes or sockets)"


def _mkdir(path: str, *, report: bool = False) -> str | None:
    """Make sure ``path`` is a real directory. A non-directory there is refused (never written through);
    with ``report`` an OS error is returned as the reason instead of raised."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            os.makedirs(path, exist_ok=True)
            st = os.lstat(path)
        except OSError as exc:
            if not report:
                raise
            return f"cannot create directory: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        # an existing symlink here could point anywhere: never write through it
        raise UnsafeSnapshot(f"refusing to restore into {path}: exists and is not a directory")
    return None


def _place_special(path: str, node: dict[str, Any], same_owner: bool) -> str | None:
    """Create a symlink or fifo under a temporary name, set its metadata, rename it over ``path``."""
    tmp = _tmp_name(os.path.dirname(path))
    try:
        if node.get("type") == "symlink":
            os.symlink(str(node.get("target", "")), tmp)
            _apply_meta(tmp, node, 0o777, same_owner, symlink=True)
        else:
            os.mkfifo(tmp, 0o600)
            # the fifo's own fd (O_NONBLOCK: no writer needed), so metadata never lands on something swapped in
            fd = os.open(tmp, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            try:
                _apply_meta(fd, node, 0o644, same_owner)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, IsADirectoryError) or os.path.isdir(path) and not os.path.islink(path):
            return f"a directory stands at {path}"
        return f"cannot create {node.get('type')}: {exc.strerror or exc}"
    return None


def _open(f: _File) -> None:
    """Create the file at its own name when nothing stands there (``O_EXCL``: never through a planted
    symlink, never over anything), else under a temporary name that :func:`_finish` renames over it.

    Writing in place spares a rename, an unlink and a lookup per file, most of a small file's restore;
    a damaged or failed file is removed again by :func:`_finish`, so only verified files are left.
    """
    if f.damaged or f.error:
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            f.fd = os.open(f.final, flags, f.create_mode)
            return
        except FileExistsError:  # a file, link or directory: write aside, replace it (or say why not) at the end
            f.tmp = _tmp_name(os.path.dirname(f.final))
            f.born = None  # born private, under another name: everything is set at the end
        try:
            f.fd = os.open(f.tmp, flags, 0o600)
        except FileExistsError:  # leftover of an earlier restore by a process with the same pid
            os.unlink(f.tmp)
            f.fd = os.open(f.tmp, flags, 0o600)
    except OSError as exc:
        f.error = f"cannot create: {exc.strerror or exc}"


def _finish(f: _File, same_owner: bool) -> None:
    fd, f.fd = f.fd, None
    opened = fd is not None
    if fd is not None:
        size = _int(f.node.get("size"))
        if not f.damaged and not f.error and f.written != size:
            f.damaged.append(f"restored size {f.written} != recorded size {size}")
        if not f.damaged and not f.error:
            f.meta_problem = _apply_meta(fd, f.node, 0o644, same_owner, born=f.born)
        os.close(fd)
    if opened and not f.damaged and not f.error:
        if f.tmp is None:
            return
        try:
            os.replace(f.tmp, f.final)  # replaces a planted symlink or hard link itself, never its target
            return
        except OSError as exc:
            f.error = (f"a directory stands at {f.final}" if isinstance(exc, IsADirectoryError)
                       else f"cannot rename into place: {exc.strerror or exc}")
    if opened:  # only what this restore created; a file it never touched stays as it was
        try:
            os.unlink(f.final if f.tmp is None else f.tmp)
        except FileNotFoundError:
            pass


def _apply_meta(where: str | int, node: dict[str, Any], default_mode: int, same_owner: bool, *,
                symlink: bool = False, born: tuple[int, int, int] | None = None) -> str | None:
    """Owner (only with ``same_owner``), extended attributes, mode and mtime; returns what could not be set.

    Owner first: chown clears setuid bits and file capabilities (``security.capability``), and setuid or
    setgid bits are kept only on an entry whose recorded owner was restored. Extended attributes before the
    mode, which may take away the write permission setting them needs.
    """
    owned = False
    uid, gid = node.get("uid"), node.get("gid")
    if same_owner and born is not None and (uid, gid) == born[:2]:
        owned = True  # created with the recorded owner already: nothing to change
    elif same_owner and _int(uid, -1) >= 0 and _int(gid, -1) >= 0:
        try:
            if isinstance(where, int):
                os.chown(where, uid, gid)
            else:
                os.chown(where, uid, gid, follow_symlinks=not symlink)
            owned = True
        except (OSError, OverflowError):
            pass
    problem = None if symlink else _set_xattrs(where, node.get("xattrs"), same_owner)
    mt = _int(node.get("mtime"))
    try:
        if symlink:
            os.utime(where, ns=(mt, mt), follow_symlinks=False)
            return problem
        mode = _int(node.get("mode"), default_mode) & 0o7777
        if not owned:
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        if born is None or mode != born[2]:
            os.chmod(where, mode)
        os.utime(where, ns=(mt, mt))
    except OSError:
        pass
    return problem


def _set_xattrs(where: str | int, xattrs: Any, privileged: bool) -> str | None:
    """Restore recorded extended attributes: ``user.*`` always, every other namespace (``trusted``,
    ``security``, ``system``) only when restoring as root, which alone may set them. A target file system
    without extended attributes is not an error (as restic); any other refusal is named."""
    if not isinstance(xattrs, dict):
        return None
    refused = []
    for name, value in sorted(xattrs.items()):
        if not isinstance(name, str) or not isinstance(value, str) or not (privileged or name.startswith("user.")):
            continue
        try:
            os.setxattr(where, name, base64.b64decode(value, validate=True))
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return None
            refused.append(f"{name}: {exc.strerror or exc}")
        except ValueError:
            refused.append(f"{name}: value is not valid base64")
    return f"extended attribute(s) not restored: {'; '.join(refused)}" if refused else None
