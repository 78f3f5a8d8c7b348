"""Bandwidth limits and pass deadlines, wrapped around any storage backend.

A satellite link is slow and only there during a pass. Both constraints are applied at the
:class:`~continuity.backup.storage.base.Backend` interface, so every backend (local, S3, and any added
later) gets them without knowing about them:

* **Rate** (``--limit-upload`` / ``--limit-download`` in KiB/s, as restic; ``limit_upload`` /
  ``limit_download`` per set and per link in the backup config): a token bucket per direction. Writes pay
  for their bytes before they are sent, reads after they arrive; a caller that would overdraw the bucket
  waits. The clock and the sleep are injected, so the limit is tested on a simulated clock, never by
  sleeping.
* **Deadline** (store-and-forward copy during a pass): a write that could not be sent completely before
  ``deadline`` at the current rate is refused with :class:`PassClosing` *before* a byte of it leaves. The
  repository writes only whole, content-named objects and the copy is content-addressed, so stopping at an
  object boundary loses nothing: what arrived stays, and the next pass skips it.

Objects are whole-object puts (packs of at most :data:`~continuity.settings.PACK_SIZE`), so the pacing is
per object: the bucket is sized to carry one second of traffic, a larger object waits for its full cost
first. That keeps the average at the limit and the burst at one object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from continuity.backup.storage.base import Backend
from continuity.errors import ContinuityError

KIB = 1024


class PassClosing(ContinuityError):
    """A write would not finish before the pass (or the caller's deadline) ends: not started."""


@dataclass(frozen=True)
class Clock:
    """Where time comes from: the real wall clock by default, a simulated one in tests."""

    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


REAL_CLOCK = Clock()


@dataclass(frozen=True)
class Limits:
    """Bytes per second each way (None: unlimited)."""

    upload: float | None = None
    download: float | None = None

    @classmethod
    def from_kib(cls, upload: float | None = None, download: float | None = None) -> Limits:
        """From restic's unit (KiB/s); 0 or None means unlimited."""
        return cls(upload * KIB if upload else None, download * KIB if download else None)

    def tighter(self, other: Limits) -> Limits:
        """The lower limit each way (a set's share of a link can only be smaller than the link)."""
        def low(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)
        return Limits(low(self.upload, other.upload), low(self.download, other.download))

    @property
    def any(self) -> bool:
        return bool(self.upload or self.download)


class TokenBucket:
    """``rate`` bytes per second with a burst of ``burst`` bytes (default: one second's worth).

    :meth:`take` blocks (through the injected ``sleep``) until the bytes are paid for; a request larger
    than the bucket drives it into debt and waits the debt off, so the long-run rate never exceeds
    ``rate`` whatever the object sizes. Thread-safe: the pack uploader and readers may share one.
    """

    def __init__(self, rate: float, *, burst: float | None = None, clock: Clock = REAL_CLOCK) -> None:
        if rate <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self.clock = clock
        self._tokens = 0.0  # no credit at the start: bytes by time t never exceed rate * (t - start)
        self._stamp = clock.now()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock.now()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_for(self, n: int) -> float:
        """Seconds :meth:`take` of ``n`` bytes would wait now."""
        with self._lock:
            self._refill()
            return max(0.0, (n - self._tokens) / self.rate)

    def take(self, n: int) -> float:
        """Pay for ``n`` bytes, sleeping until paid; returns the seconds waited."""
        with self._lock:
            self._refill()
            self._tokens -= n
            wait = max(0.0, -self._tokens / self.rate)
        if wait > 0:
            self.clock.sleep(wait)
        return wait


class ThrottledBackend(Backend):
    """``inner`` with rate limits per direction and an optional deadline for writes.

    Only bytes are limited (object bodies); listings, existence checks and deletes are requests without a
    payload worth pacing.
    """

    def __init__(self, inner: Backend, limits: Limits = Limits(), *, clock: Clock = REAL_CLOCK,
                 deadline: float | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.read_window = inner.read_window
        self.read_gap = inner.read_gap
        self.read_threads = inner.read_threads
        self.limits = limits
        self.clock = clock
        self.deadline = deadline
        self.up = TokenBucket(limits.upload, clock=clock) if limits.upload else None
        self.down = TokenBucket(limits.download, clock=clock) if limits.download else None
        self.bytes_written = 0
        self.bytes_read = 0

    def _check_deadline(self, n: int, name: str) -> None:
        if self.deadline is None:
            return
        wait = self.up.wait_for(n) if self.up is not None else 0.0
        if self.clock.now() + wait > self.deadline:
            raise PassClosing(f"not sending {name} ({n} bytes): it would not arrive before the pass ends")

    def write(self, name: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        n = len(data)
        self._check_deadline(n, name)
        if self.up is not None:
            self.up.take(n)
        self.inner.write(name, data, sync=sync)
        self.bytes_written += n

    def read(self, name: str) -> bytes:
        data = self.inner.read(name)
        self._paid_read(len(data))
        return data

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        data = self.inner.read_range(name, offset, length)
        self._paid_read(len(data))
        return data

    def _paid_read(self, n: int) -> None:
        if self.down is not None:
            self.down.take(n)
        self.bytes_read += n

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def barrier(self) -> None:
        self.inner.barrier()

    def close(self) -> None:
        self.inner.close()


def throttled(backend: Backend, limits: Limits, *, clock: Clock = REAL_CLOCK,
              deadline: float | None = None) -> Backend:
    """``backend`` itself when nothing limits it, else wrapped (the common case costs nothing)."""
    if not limits.any and deadline is None:
        return backend
    return ThrottledBackend(backend, limits, clock=clock, deadline=deadline)
