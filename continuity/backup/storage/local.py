"""Local directory backend: temp file, fsync, rename, fsync dir.

Packs are written with ``sync=False`` (fsynced but their directory not yet),
and :meth:`barrier` fsyncs the touched directories once before the index that
references them is written, instead of one directory fsync per pack.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from continuity.backup.storage.base import Backend, NotFound


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend(Backend):
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = self.root
        self._dirty: set[str] = set()
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def _path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"bad object name {name!r}")
        return os.path.join(self.root, name)

    def read(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):  # a file where a directory of the path should be
            raise NotFound(name) from None

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        # one pread, no buffered file object: a buffered read would add its own copy of the range
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(name) from None
        try:
            return os.pread(fd, length, offset) if length > 0 else b""
        finally:
            os.close(fd)

    def _ensure_dir(self, d: str) -> None:
        if d in self._made:
            return
        if not os.path.isdir(d):
            os.makedirs(d, exist_ok=True)
            fsync_dir(os.path.dirname(d))
        self._made.add(d)

    def write(self, name: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        path = self._path(name)
        d = os.path.dirname(path)
        self._ensure_dir(d)
        tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, path)
        if sync:
            fsync_dir(d)
        else:
            with self._lock:
                self._dirty.add(d)

    def barrier(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for d in sorted(dirty):
            fsync_dir(d)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self._path(prefix)
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            for fn in files:
                if ".tmp-" in fn:
                    continue  # a writer died before its rename: not an object
                try:
                    size = os.stat(os.path.join(dirpath, fn)).st_size
                except FileNotFoundError:
                    continue
                yield (f"{rel}/{fn}" if rel != "." else fn), size

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))
