"""Keep the last good configuration in force when its file is broken under a running fleet.

An operator saving a typo in ``ops/blueprint.yml`` must not turn failure detection off. A long-running process
reads the file again when it changes (by mtime and size); when the new content is invalid it keeps using the last
value that loaded, and says so once: the caller is told the news ("invalid" with the error, later "recovered")
so it can emit a pulse event and record the error where ``continuity status`` shows it. A process that never
loaded a good value has nothing to fall back on and raises the error as before (a fleet must not start on a
broken file). A copy of the last good file is kept under the state directory, so a command started while the
file is broken (``continuity status``) can still show the fleet, and say which file it fell back on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from continuity.errors import ContinuityError

T = TypeVar("T")
News = Literal["invalid", "recovered"]


@dataclass(frozen=True)
class ConfigError:
    path: str
    error: str
    since: float  # unix time the broken content was first seen


@dataclass(frozen=True)
class Loaded(Generic[T]):
    value: T
    error: ConfigError | None = None  # set while the file is broken and ``value`` is the last good one
    news: News | None = None  # what changed with this read (None: nothing new)


def _stamp(path: Path) -> tuple[float, int]:
    st = path.stat()
    return st.st_mtime, st.st_size


class LastGood(Generic[T]):
    """One file, one loader: :meth:`get` returns the current value, or the last good one with the error."""

    def __init__(self, load: Callable[[Path], T], clock: Callable[[], float] = time.time,
                 keep_copy: Path | None = None) -> None:
        self.load = load
        self.clock = clock
        self.keep_copy = keep_copy
        self.stamp: tuple[float, int] | None = None
        self.value: T | None = None
        self.error: ConfigError | None = None

    def get(self, path: Path) -> Loaded[T]:
        try:
            stamp = _stamp(path)
        except OSError:
            stamp = None
        if stamp is not None and stamp == self.stamp and self.value is not None:
            return Loaded(self.value, self.error)
        try:
            value = self.load(path)
        except ContinuityError as exc:
            if self.value is None:
                raise
            self.stamp = stamp
            first = self.error is None
            if first:
                self.error = ConfigError(str(path), str(exc), self.clock())
            else:
                self.error = ConfigError(str(path), str(exc), self.error.since)
            return Loaded(self.value, self.error, "invalid" if first else None)
        recovered = self.error is not None
        self.stamp, self.value, self.error = stamp, value, None
        if self.keep_copy is not None:
            save_copy(path, self.keep_copy)
        return Loaded(value, None, "recovered" if recovered else None)


def save_copy(path: Path, copy: Path) -> None:
    """Keep the bytes of the last file that loaded (temp file + rename: a reader never sees half of it).

    The copy is the owner's alone (0600), whatever the umask of the process that happens to refresh it: a
    `continuity status` from an operator's shell (umask 022) must not leave the fleet's state readable."""
    try:
        data = path.read_bytes()
        copy.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older temp file of the same name keeps its mode through O_CREAT
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, copy)
    except OSError:
        pass  # the copy is a convenience for `status`; the fleet runs on the in-memory value


def load_or_last_good(load: Callable[[Path], T], path: Path, copy: Path) -> Loaded[T]:
    """For a short-lived command: the file if it loads (its copy refreshed), else the last good copy with the
    error; raises the file's error when there is no copy either."""
    try:
        value = load(path)
    except ContinuityError as exc:
        if not copy.is_file():
            raise
        try:
            since = copy.stat().st_mtime
            return Loaded(load(copy), ConfigError(str(path), str(exc), since), "invalid")
        except (ContinuityError, OSError):
            raise exc from None
    save_copy(path, copy)
    return Loaded(value)
