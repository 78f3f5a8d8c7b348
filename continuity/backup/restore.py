"""Restore: every byte verified, nothing written outside the target, damage named not written.

The whole plan is built and checked before the first write: every name in
the snapshot must be a plain path component (no ``..``, no ``/``, no NUL,
no duplicates), so a crafted snapshot is refused outright rather than half
restored. Content is then restored pack by pack in a thread pool; within a
pack only the needed blobs are read, batched into windows of a few MiB (see
:func:`read_windows`) rather than the whole ~16 MiB pack, so peak memory is a
window plus a blob per thread. Each blob is decrypted and hash-checked once,
whatever it is read with, and written into a hidden temporary file
per file, which is renamed into place only when all its blobs verified. A
file with any damaged blob is named in the result and its temporary file
deleted: a damaged file is never left looking restored.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from continuity.backup.repository import DATA, DamagedError, Repository, pack_name
from continuity.backup.storage import NotFound
from continuity.errors import ContinuityError

Progress = Callable[[int, int], None]


class UnsafeSnapshot(ContinuityError):
    """The snapshot names a path that would escape the target: refused, nothing written."""


def check_name(name: Any, where: str) -> str:
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\x00" in name
            or (os.sep != "/" and os.sep in name)):
        raise UnsafeSnapshot(f"refusing to restore: unsafe path component {name!r} in {where or '/'}")
    return name


@dataclass
class _File:
    rel: str
    node: dict[str, Any]
    final: str
    tmp: str
    remaining: int
    direct: bool = False  # one blob: verified before the first byte is written, so no temp file needed
    damaged: list[str] = field(default_factory=list)
    fd: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


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


def restore(repo: Repository, snapshot: dict[str, Any], target: str, *, includes: list[str] | None = None,
            progress: Progress | None = None, workers: int | None = None) -> dict[str, Any]:
    """Restore ``snapshot`` (or the paths in ``includes``) below ``target``; returns a JSON-ready report."""
    started = time.time()
    includes = [i.strip("/") for i in includes] if includes else None
    damaged: list[dict[str, str]] = []
    plan = [(rel, node) for rel, node in walk(repo, snapshot["tree"], "", damaged) if _selected(rel, includes)]
    os.makedirs(target, exist_ok=True)
    root = os.path.realpath(target)
    dirs: list[tuple[str, dict[str, Any]]] = []
    files: list[_File] = []
    by_pack: dict[str, list[tuple[bytes, int, _File, int]]] = defaultdict(list)
    total = 0
    index = repo.index
    for rel, node in plan:
        path = os.path.join(root, *rel.split("/"))
        kind = node.get("type")
        if kind == "dir":
            _mkdir(path)
            dirs.append((path, node))
            continue
        _mkdir(os.path.dirname(path))
        if kind == "symlink":
            _replace_with_symlink(path, str(node.get("target", "")))
            continue
        if kind != "file":
            continue
        content = node.get("content") or []
        d, base = os.path.split(path)
        f = _File(rel, node, path, os.path.join(d, f".{base}.continuity-restore-{os.getpid()}"), len(content),
                  direct=len(content) == 1)
        files.append(f)
        offset = 0
        for cid in content:
            bid = bytes.fromhex(cid)
            e = index.get(bid)
            if e is None:
                f.damaged.append(f"blob {cid[:16]} missing from the index")
                f.remaining -= 1
                continue
            by_pack[e.pack].append((bid, e.raw_length, f, offset))
            offset += e.raw_length
            total += e.raw_length
    for f in files:
        if f.remaining == 0:  # empty, or every blob already known to be missing
            _open(f)
            _finish(f)
    done = [0]
    done_lock = threading.Lock()
    backend = repo.backend

    def _deliver(data: bytes | memoryview | str, targets: list[tuple[_File, int]]) -> None:
        """Write one verified blob (or its damage reason) to every place it occurs."""
        for f, off in targets:
            with f.lock:
                if isinstance(data, str):
                    f.damaged.append(data)
                elif not f.damaged:
                    if f.fd is None:  # opened on first data, so open files stay few
                        _open(f)
                    assert f.fd is not None
                    os.pwrite(f.fd, data, off)
                f.remaining -= 1
                last = f.remaining == 0
            if last:
                _finish(f)
        if not isinstance(data, str):
            with done_lock:
                done[0] += len(data) * len(targets)

    def restore_pack(pack: str) -> None:
        # each blob decrypted once, written to every place it occurs, then dropped (bounded memory)
        uses: dict[bytes, list[tuple[_File, int]]] = {}
        for bid, _raw_len, f, off in by_pack[pack]:
            uses.setdefault(bid, []).append((f, off))
        blobs = [(bid, e) for bid in uses if (e := index.get(bid)) is not None]
        missing = False
        for lo, hi, members in read_windows([(e.offset, e.length) for _, e in blobs], backend.read_window,
                                            backend.read_gap):
            raw: bytes | None = None
            if not missing:
                try:
                    raw = backend.read_range(pack_name(pack), lo, hi - lo)
                except NotFound:
                    missing = True
            for i in members:
                bid, e = blobs[i]
                data: bytes | memoryview | str
                if raw is None:
                    data = f"pack {pack[:16]} missing"
                else:
                    try:
                        data = repo.open_blob_view(bid, DATA,
                                                   memoryview(raw)[e.offset - lo:e.offset - lo + e.length])
                    except DamagedError as exc:
                        data = str(exc)
                _deliver(data, uses[bid])
            del raw
        if progress:
            progress(done[0], total)

    # file creation is latency-bound (the GIL is released in every syscall): more threads than cores pay off
    with ThreadPoolExecutor(workers or max(4, min(8, 3 * (os.cpu_count() or 2)))) as pool:
        list(pool.map(restore_pack, sorted(by_pack)))
    for path, node in reversed(dirs):
        _apply_meta(path, node, is_dir=True)
    bad = [{"path": f.rel, "reason": "; ".join(sorted(set(f.damaged)))} for f in files if f.damaged]
    return {
        "snapshot": snapshot["id"], "target": root,
        "files": sum(1 for f in files if not f.damaged), "dirs": len(dirs),
        "bytes": sum(int(f.node.get("size", 0)) for f in files if not f.damaged),
        "damaged": damaged + bad, "duration": round(time.time() - started, 3),
    }


def _mkdir(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        # an existing symlink here could point anywhere: never write through it
        raise UnsafeSnapshot(f"refusing to restore into {path}: exists and is not a directory")


def _replace_with_symlink(path: str, target: str) -> None:
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    os.symlink(target, path)


def _open(f: _File) -> None:
    if f.damaged:
        return
    if f.direct:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        try:
            f.fd = os.open(f.final, flags, 0o600)
        except OSError:  # ELOOP: a symlink stands there; replace it, never write through it
            os.unlink(f.final)
            f.fd = os.open(f.final, flags | os.O_EXCL, 0o600)
        return
    try:
        os.unlink(f.tmp)  # leftover of an interrupted restore
    except FileNotFoundError:
        pass
    f.fd = os.open(f.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def _finish(f: _File) -> None:
    fd, f.fd = f.fd, None
    opened = fd is not None
    if fd is not None:
        size = int(f.node.get("size", 0))
        if not f.damaged and os.fstat(fd).st_size != size:
            f.damaged.append(f"restored size {os.fstat(fd).st_size} != recorded size {size}")
        if not f.damaged:
            _apply_meta(fd, f.node, is_dir=False)
        os.close(fd)
    if f.damaged:
        if opened:  # only what this restore created; a file it never touched stays as it was
            try:
                os.unlink(f.final if f.direct else f.tmp)
            except FileNotFoundError:
                pass
        return
    if not f.direct:
        os.replace(f.tmp, f.final)


def _apply_meta(path: str | int, node: dict[str, Any], *, is_dir: bool) -> None:
    try:
        os.chmod(path, int(node.get("mode", 0o755 if is_dir else 0o644)) & 0o7777)
        mt = int(node.get("mtime", 0))
        os.utime(path, ns=(mt, mt))
    except OSError:
        pass
