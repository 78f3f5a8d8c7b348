"""Forked worker processes fed batches over pipes: parallel work that the interpreter lock would serialise.

Restoring many small files is interpreter work between short system calls.
Threads in one process take turns on the interpreter lock around every one of
them: 200,000 files cost ~15 CPU-seconds single-threaded and ~23 with six
threads, the difference being lock hand-overs (futex calls, 17 a file). A few
forked processes, each with its own lock, spread the same work over the
cores instead.

Each worker is forked before the caller starts any thread, inherits what the
caller has loaded (the opened repository, its index), runs ``serve`` on each
batch it is sent and sends the result back; payloads and results are pickled
with a length prefix. A worker that raises sends the error's text back and the
caller raises :class:`WorkerFailed`; one that dies is noticed by its pipe
closing. Workers leave with ``os._exit``: nothing of the parent (atexit
handlers, buffered output, temporary files) runs twice.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from continuity.errors import ContinuityError

_LEN = struct.Struct(">Q")


class WorkerFailed(ContinuityError):
    """A worker process raised, or died, while handling a batch: the whole operation fails, said in one line."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _LEN.pack(len(data)) + data)


def _receive(fd: int) -> Any:
    head = _read_exact(fd, _LEN.size)
    if head is None:
        raise EOFError
    body = _read_exact(fd, _LEN.unpack(head)[0])
    if body is None:
        raise EOFError
    return pickle.loads(body)


def _serve_forever(inbox: int, outbox: int, serve: Callable[[Any], Any]) -> None:
    while True:
        try:
            payload = _receive(inbox)
        except EOFError:
            return
        try:
            result: Any = ("ok", serve(payload))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, as text
            result = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        _send(outbox, result)


class ForkedWorkers:
    """``count`` forked processes each running ``serve`` on what :meth:`submit` sends them."""

    def __init__(self, count: int, serve: Callable[[Any], Any]) -> None:
        self._workers: list[tuple[int, int, int]] = []  # (pid, to worker, from worker)
        self._idle: list[int] = []  # indices into _workers
        self._busy: dict[int, int] = {}  # result fd -> index
        try:
            for _ in range(count):
                self._fork(serve)
        except BaseException:
            self.close(kill=True)
            raise

    def _fork(self, serve: Callable[[Any], Any]) -> None:
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                os.close(down_w)
                os.close(up_r)
                for _, to_worker, from_worker in self._workers:  # siblings' pipes are not this worker's
                    os.close(to_worker)
                    os.close(from_worker)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _serve_forever(down_r, up_w, serve)
            except BaseException:  # noqa: BLE001 - a worker never returns into the parent's code
                code = 1
            finally:
                os._exit(code)
        os.close(down_r)
        os.close(up_w)
        self._workers.append((pid, down_w, up_r))
        self._idle.append(len(self._workers) - 1)

    def submit(self, payload: Any) -> list[Any]:
        """Send ``payload`` to an idle worker; returns the results collected while waiting for one to be idle."""
        results: list[Any] = []
        while not self._idle:
            results.extend(self._collect(block=True))
        i = self._idle.pop()
        _send(self._workers[i][1], payload)
        self._busy[self._workers[i][2]] = i
        return results

    def _collect(self, *, block: bool) -> Iterator[Any]:
        if not self._busy:
            return
        ready, _, _ = select.select(list(self._busy), [], [], None if block else 0)
        for fd in ready:
            i = self._busy.pop(fd)
            try:
                status, value = _receive(fd)
            except EOFError:
                pid = self._workers[i][0]
                raise WorkerFailed(f"worker process {pid} died while restoring a batch") from None
            self._idle.append(i)
            if status != "ok":
                raise WorkerFailed(f"worker process {self._workers[i][0]} failed: {value.splitlines()[0]}")
            yield value

    def drain(self) -> Iterator[Any]:
        """Every result still outstanding."""
        while self._busy:
            yield from self._collect(block=True)

    def close(self, *, kill: bool = False) -> None:
        """Let the workers finish (end of input) and reap them; with ``kill``, stop them first."""
        workers, self._workers, self._idle, self._busy = self._workers, [], [], {}
        for pid, to_worker, from_worker in workers:
            if kill:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.close(to_worker)
            os.close(from_worker)
        for pid, _, _ in workers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
