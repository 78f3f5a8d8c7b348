"""The backend contract shared by every storage backend (local, S3, SFTP, REST)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from continuity.errors import ContinuityError

# The one prefix whose objects are replaced and removed in normal operation: a lock is refreshed in place
# and removed when its holder finishes, so append-only storage still lets it change (as restic's
# rest-server does with --append-only).
MUTABLE_PREFIX = "locks/"


class NotFound(Exception):
    """The named object does not exist."""


class AppendOnlyRefused(ContinuityError):
    """The storage (or the credential used on it) may add objects but not delete or replace them.

    Exit 1, as restic exits when its rest-server refuses a delete with 403.
    """


class Backend(ABC):
    """Flat namespace of objects named like ``data/ab/abcdef...``."""

    url: str
    # How readers batch ranged reads of one object (restore): blobs closer than ``read_gap`` bytes are
    # fetched in one read of at most ``read_window`` bytes (a single larger blob is read alone). Small
    # windows bound memory; the gap trades a few unneeded bytes for fewer requests.
    read_window: int = 2 * 1024 * 1024
    read_gap: int = 64 * 1024
    # How many reads a restore keeps in flight: None is the restore's default for a local disk (four to
    # eight); a backend whose reads wait on the network sets its own, so that waiting overlaps.
    read_threads: int | None = None

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

    # True when this backend object knows it may only add (a client-side mode, or a server that said so);
    # a server may still refuse deletes without the client knowing beforehand: see :meth:`can_delete`.
    append_only: bool = False

    def can_delete(self) -> bool:
        """Whether deleting non-lock objects is allowed, asked before forget/prune deletes anything.

        Backends whose server enforces append-only probe it (a delete of a name that cannot exist);
        the default trusts :attr:`append_only`.
        """
        return not self.append_only

    def barrier(self) -> None:
        """Make every earlier ``write(sync=False)`` durable (a no-op where writes are durable at once)."""
        return None

    def close(self) -> None:
        """Release connections."""
        return None
