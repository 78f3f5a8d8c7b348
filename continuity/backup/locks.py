"""Repository locks: shared for snapshots, exclusive for prune.

Snapshots from several nodes run at once (each only adds write-once files),
so they take *shared* locks that never block each other; only prune, which
deletes, needs to be alone. A lock file names host, pid and a refresh time;
a lock is **stale** when its pid is dead on this host or it has not been
refreshed within :data:`STALE_AFTER`. Stale locks are removed automatically
(with a note), because a lock left by a crashed job must not block every
scheduled run after it (restic#2736, borg#2306). A live conflicting lock
raises :class:`RepositoryLocked` whose message says how to break it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from continuity.backup.storage import AppendOnlyRefused, Backend, NotFound
from continuity.errors import RepositoryLocked

STALE_AFTER = 30 * 60.0
REFRESH_EVERY = 5 * 60.0
# Where storage refuses even lock removal (an SFTP server denying every remove), a finished holder adds
# ``<lock>-released`` instead: the pair counts as no lock, and a full-access unlock/prune removes both.
RELEASED = "-released"


@dataclass
class LockInfo:
    name: str
    hostname: str
    pid: int
    time: float
    exclusive: bool
    operation: str

    @classmethod
    def parse(cls, name: str, raw: bytes) -> LockInfo:
        d: dict[str, Any] = json.loads(raw)
        return cls(name, str(d["hostname"]), int(d["pid"]), float(d["time"]), bool(d["exclusive"]),
                   str(d.get("operation", "")))

    def stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if now - self.time > STALE_AFTER:
            return True
        if self.hostname == socket.gethostname():
            return not _pid_alive(self.pid)
        return False

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        return f"{kind} lock by pid {self.pid} on {self.hostname} ({self.operation or 'unknown'}, since {when})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def list_locks(backend: Backend) -> list[LockInfo]:
    out = []
    names = [name for name, _size in backend.list("locks")]
    released = {n.removesuffix(RELEASED) for n in names if n.endswith(RELEASED)}
    for name in names:
        if name in released:
            continue
        if name.endswith(RELEASED):
            # released lock: not a holder, only litter for a full-access credential to sweep
            out.append(LockInfo(name, "?", 0, 0.0, False, "released"))
            continue
        try:
            out.append(LockInfo.parse(name, backend.read(name)))
        except NotFound:
            continue
        except (ValueError, KeyError):
            # unreadable lock file: treat as stale so it cannot wedge the repository forever
            out.append(LockInfo(name, "?", 0, 0.0, True, "unreadable"))
    return out


class Lock:
    """Hold a lock for the duration of a ``with`` block, refreshing it in the background."""

    def __init__(self, backend: Backend, *, exclusive: bool, operation: str, repo_hint: str = "") -> None:
        self.backend = backend
        self.exclusive = exclusive
        self.operation = operation
        self.repo_hint = repo_hint or backend.url
        self.name = f"locks/{uuid.uuid4().hex}"
        self.notes: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        self.backend.write(self.name, json.dumps({
            "hostname": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
            "exclusive": self.exclusive, "operation": self.operation,
        }).encode())

    def acquire(self) -> Lock:
        # write first, then look: two racing lockers both see each other and at least one backs off
        self._write()
        for other in list_locks(self.backend):
            if other.name == self.name:
                continue
            if other.operation == "released":
                try:  # the lock first: while its marker exists it stays hidden
                    self.backend.delete(other.name.removesuffix(RELEASED))
                    self.backend.delete(other.name)
                except AppendOnlyRefused:
                    pass
                continue
            if not (self.exclusive or other.exclusive):
                continue
            if other.stale():
                try:
                    self.backend.delete(other.name)
                    self.notes.append(f"removed stale {other.describe()}")
                except AppendOnlyRefused:
                    pass  # an append-only credential leaves it to the full-access one
                continue
            self.backend.delete(self.name)
            raise RepositoryLocked(
                f"repository {self.repo_hint} is locked: {other.describe()}; if no continuity process "
                f"holds it, run `continuity backup unlock --repo {self.repo_hint}` "
                f"(add --remove-all to break live-looking locks)")
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            try:
                self._write_refresh()
            except Exception:  # a missed refresh only risks staleness, never data
                pass

    def _write_refresh(self) -> None:
        # write-once everywhere else; a lock is the one object replaced in place (atomic rename / PUT)
        self._write()

    def release(self) -> None:
        self._stop.set()
        try:
            self.backend.delete(self.name)
        except AppendOnlyRefused:
            self.backend.write(self.name + RELEASED, b"{}")

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def unlock(backend: Backend, *, remove_all: bool = False) -> list[str]:
    """Remove stale locks (or all with ``remove_all``); returns descriptions of what was removed."""
    removed = []
    names = {name for name, _size in backend.list("locks")}
    for info in list_locks(backend):
        if remove_all or info.stale():
            backend.delete(info.name)
            removed.append(info.describe())
    for name in sorted(names):  # released pairs: nobody holds them, sweep both halves
        if name.endswith(RELEASED):
            backend.delete(name.removesuffix(RELEASED))
            backend.delete(name)
    return removed
