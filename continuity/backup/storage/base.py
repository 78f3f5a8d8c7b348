"""The backend contract shared by local and S3 storage."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator


class NotFound(Exception):
    """The named object does not exist."""


class Backend(ABC):
    """Flat namespace of objects named like ``data/ab/abcdef...``."""

    url: str
    # How readers batch ranged reads of one object (restore): blobs closer than ``read_gap`` bytes are
    # fetched in one read of at most ``read_window`` bytes (a single larger blob is read alone). Small
    # windows bound memory; the gap trades a few unneeded bytes for fewer requests.
    read_window: int = 2 * 1024 * 1024
    read_gap: int = 64 * 1024

    @abstractmethod
    def read(self, name: str) -> bytes: ...

    @abstractmethod
    def read_range(self, name: str, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def write(self, name: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        """Atomically create ``name``; with ``sync`` it is durable on return."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(name, size) of every object under the directory ``prefix``."""

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    def barrier(self) -> None:
        """Make every earlier ``write(sync=False)`` durable (a no-op where writes are durable at once)."""
        return None

    def close(self) -> None:
        """Release connections."""
        return None
