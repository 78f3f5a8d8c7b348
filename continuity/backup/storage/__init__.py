"""Where repository files live: a local directory, an S3-compatible bucket, SFTP or restic's REST server.

Every file the repository writes is write-once and named by what it holds, so
a backend only needs whole-object put/get/list/delete plus ranged reads. The
only durability promise the repository relies on is :meth:`Backend.write`
being atomic (all or nothing under the final name) and, after
:meth:`Backend.barrier`, durable.
"""

from __future__ import annotations

from continuity.backup.storage.append_only import AppendOnlyBackend
from continuity.backup.storage.base import AppendOnlyRefused, Backend, NotFound
from continuity.backup.storage.local import LocalBackend
from continuity.backup.storage.s3 import S3Backend  # light: boto3 is imported when an S3Backend is made
from continuity.errors import UsageError

REMOTE_SCHEMES = ("s3:", "sftp:", "rest:")


def is_url(location: str) -> bool:
    """A repository URL rather than a path (``sftp:host:/x`` has no ``://``, and must not be made absolute)."""
    return location.startswith(REMOTE_SCHEMES) or "://" in location


def open_backend(url: str) -> Backend:
    """A repository URL as restic spells them, or a local path.

    ``s3://bucket/prefix`` (endpoint from ``AWS_ENDPOINT_URL``), ``sftp:user@host:/path`` or
    ``sftp://user@host:port//path``, ``rest:http(s)://[user:pass@]host:port/[path]``. The SFTP and REST
    modules are imported only when used (paramiko and urllib3 cost start-up time).
    """
    if url.startswith("s3:"):
        return S3Backend.from_url(url)
    if url.startswith("sftp:"):
        from continuity.backup.storage.sftp import SftpBackend

        return SftpBackend.from_url(url)
    if url.startswith("rest:"):
        from continuity.backup.storage.rest import RestBackend

        return RestBackend.from_url(url)
    if "://" in url and not url.startswith("file://"):
        raise UsageError(f"unsupported repository URL {url!r}: use a path, s3://bucket/prefix, "
                         "sftp:user@host:/path or rest:http://host:port/")
    return LocalBackend(url.removeprefix("file://"))


__all__ = ["AppendOnlyBackend", "AppendOnlyRefused", "Backend", "NotFound", "is_url", "open_backend"]
