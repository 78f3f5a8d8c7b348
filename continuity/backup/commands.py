"""Running the commands a backup set declares: command sources, before/after hooks, drill checks.

Every command is an argv list (never a shell string: nothing in it is parsed
again), runs in its own process group with stdin closed, and has a deadline
after which the whole group is killed: a dump that hangs must not hold the
repository lock, or the next scheduled run, forever. Only the last few KiB of
what a command prints are kept (a chatty ``pg_dump -v`` cannot fill memory),
enough to say why it failed. A command *source*'s stdout is handed to the
caller as a stream, so a 50 GiB dump goes through the chunker piece by piece
and is never held in memory or staged on a temporary disk.
"""

from __future__ import annotations

import dataclasses
import io
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from continuity.durations import format_duration
from continuity.errors import ContinuityError

T = TypeVar("T")
TAIL_BYTES = 4096


class CommandFailed(ContinuityError):
    """A command source or an aborting hook failed: the snapshot is not saved (exit 1)."""


@dataclass(frozen=True)
class Outcome:
    """How one command ended. ``returncode`` is None when it could not start or was killed at its deadline."""

    argv: tuple[str, ...]
    returncode: int | None
    timed_out: bool
    duration: float
    stderr: str = ""
    stdout: str = ""
    error: str | None = None  # why it could not start
    timeout: float | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.error is None

    def describe(self) -> str:
        """One line: what ran and why it failed (empty for success)."""
        name = os.path.basename(self.argv[0]) if self.argv else "?"
        if self.error is not None:
            return f"cannot run {name}: {self.error}"
        if self.timed_out:
            limit = format_duration(self.timeout or self.duration)
            why = f"{name} did not finish within its timeout ({limit}) and was killed"
        elif self.returncode is not None and self.returncode < 0:
            why = f"{name} was killed by signal {-self.returncode}"
        elif self.returncode:
            why = f"{name} exited {self.returncode}"
        else:
            return ""
        said = " ".join(self.stderr.split())[-300:]
        return f"{why}: {said}" if said else why

    def as_dict(self) -> dict[str, object]:
        return {"command": list(self.argv), "exit": self.returncode, "timed_out": self.timed_out,
                "duration": round(self.duration, 3), "ok": self.ok, "error": self.error,
                "output": self.stdout[-1000:], "stderr": self.stderr[-1000:]}


class _Tail:
    """The last ``limit`` bytes written to it, read from a pipe by a thread."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 2 * self.limit:
            del self.buf[:-self.limit]

    def drain(self, pipe: IO[bytes]) -> None:
        try:
            while block := pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536):
                self.feed(block)
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        return bytes(self.buf[-self.limit:]).decode(errors="replace")


class _Pipe(io.RawIOBase):
    """A command's stdout that reads as ended once its deadline passed, even if a process that left the
    group (``setsid``) still holds the pipe open: the deadline is the command's, whoever keeps the pipe."""

    def __init__(self, fd: int, expired: threading.Event) -> None:
        super().__init__()
        self.fd = fd
        self.expired = expired

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.expired.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                return os.readv(self.fd, [buffer])
        return 0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stream(argv: Sequence[str], timeout: float | None, consume: Callable[[IO[bytes]], T], *,
           env: Mapping[str, str] | None = None, cwd: str | None = None,
           stdin: str | None = None) -> tuple[T | None, Outcome]:
    """Run ``argv``, hand its stdout to ``consume`` (in this thread), and say how it ended.

    ``consume`` reads until EOF; when the deadline (``timeout`` seconds, None
    for none) passes the process group is killed, which ends the stream. If ``consume`` raises, the command is
    killed and the exception propagates. The result of ``consume`` is returned
    even when the command failed: the caller decides what a failure costs.
    ``stdin`` names a file to feed it (else it reads nothing: /dev/null).
    """
    argv = tuple(str(a) for a in argv)
    started = time.monotonic()
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        with open(stdin, "rb") if stdin is not None else open(os.devnull, "rb") as inp:
            proc = subprocess.Popen(argv, stdin=inp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=full_env, cwd=cwd, start_new_session=True)
    except OSError as exc:
        return None, Outcome(argv, None, False, time.monotonic() - started, error=exc.strerror or str(exc),
                             timeout=timeout)
    assert proc.stdout is not None and proc.stderr is not None
    err = _Tail()
    reader = threading.Thread(target=err.drain, args=(proc.stderr,), daemon=True, name="cmd-stderr")
    reader.start()
    expired = threading.Event()

    def _expire() -> None:
        expired.set()
        _kill_group(proc)

    timer = threading.Timer(max(0.0, timeout if timeout is not None else 0.0), _expire)
    timer.daemon = True
    if timeout is not None:  # None: no deadline (the CLI's --stdin-from-command, as restic)
        timer.start()
    try:
        try:
            result = consume(_Pipe(proc.stdout.fileno(), expired))  # type: ignore[arg-type]
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            proc.stdout.close()
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        # a grandchild that escaped the group may hold stderr open: do not wait for it forever
        reader.join(timeout=2.0)
        if not reader.is_alive():
            proc.stderr.close()
    timed_out = expired.is_set()
    return result, Outcome(argv, None if timed_out else proc.returncode, timed_out, time.monotonic() - started,
                           stderr=err.text(), timeout=timeout)


def run(argv: Sequence[str], timeout: float | None, *, env: Mapping[str, str] | None = None,
        cwd: str | None = None, stdin: str | None = None) -> Outcome:
    """Run a hook or a check: both its outputs are kept as tails, nothing else is read from it."""
    out = _Tail()

    def _keep(pipe: IO[bytes]) -> None:
        out.drain(pipe)

    _, outcome = stream(argv, timeout, _keep, env=env, cwd=cwd, stdin=stdin)
    if outcome.error is not None:
        return outcome
    return dataclasses.replace(outcome, stdout=out.text())
