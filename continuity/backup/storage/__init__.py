"""Where repository files live: a local directory or an S3-compatible bucket.

Every file the repository writes is write-once and named by what it holds, so
a backend only needs whole-object put/get/list/delete plus ranged reads. The
only durability promise the repository relies on is :meth:`Backend.write`
being atomic (all or nothing under the final name) and, after
:meth:`Backend.barrier`, durable.
"""

from __future__ import annotations

from continuity.backup.storage.base import Backend, NotFound
from continuity.backup.storage.local import LocalBackend
from continuity.backup.storage.s3 import S3Backend  # light: boto3 is imported when an S3Backend is made
from continuity.errors import UsageError


def open_backend(url: str) -> Backend:
    """``s3://bucket/prefix`` (endpoint from ``AWS_ENDPOINT_URL``) or a local path."""
    if url.startswith("s3:"):
        return S3Backend.from_url(url)
    if "://" in url and not url.startswith("file://"):
        raise UsageError(f"unsupported repository URL {url!r}: use a path or s3://bucket/prefix")
    return LocalBackend(url.removeprefix("file://"))


__all__ = ["Backend", "NotFound", "open_backend"]
