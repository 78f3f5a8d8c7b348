"""Append-only access to any backend: add objects, never delete or replace them (locks excepted).

This is the client side of append-only: a repository opened with a key
created by ``continuity backup key add --append-only`` goes through this guard,
so a host holding only that password cannot forget, prune or overwrite through
continuity. It does not stop a compromised host that bypasses continuity; that
needs the storage to refuse too (rest-server ``--append-only``, an SFTP
subsystem that denies removal, S3 object lock, or OS permissions; see
docs/backends.md), which is why prune needs a separate, full credential.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from continuity.backup.storage.base import MUTABLE_PREFIX, AppendOnlyRefused, Backend


def refusal(backend_url: str, what: str) -> AppendOnlyRefused:
    return AppendOnlyRefused(f"repository {backend_url} is append-only for this credential: {what} refused "
                             "(forget/prune need a full-access key or server credential)")


class AppendOnlyBackend(Backend):
    append_only = True

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url
        self.read_window = inner.read_window
        self.read_gap = inner.read_gap
        self.read_threads = inner.read_threads

    def __getattr__(self, attr: str) -> Any:  # ensure_bucket and other backend-specific helpers
        return getattr(self.inner, attr)

    def read(self, name: str) -> bytes:
        return self.inner.read(name)

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        return self.inner.read_range(name, offset, length)

    def write(self, name: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        if not name.startswith(MUTABLE_PREFIX) and self.inner.exists(name):
            raise refusal(self.url, f"replacing {name}")
        self.inner.write(name, data, sync=sync)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        if not name.startswith(MUTABLE_PREFIX):
            raise refusal(self.url, f"deleting {name}")
        self.inner.delete(name)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def can_delete(self) -> bool:
        return False

    def barrier(self) -> None:
        self.inner.barrier()

    def close(self) -> None:
        self.inner.close()
