"""S3-compatible object storage via boto3.

A PUT is atomic (readers see the whole object or none) and durable when it
returns, which is exactly what the repository's write order needs; there is
no rename, so objects are written straight under their content-derived names.
The endpoint comes from boto3's own ``AWS_ENDPOINT_URL`` (MinIO, moto, ...).

Object-lock retention (``CONTINUITY_S3_OBJECT_LOCK_DAYS``) stamps every
object but locks with a retain-until date, so until then no credential (in
COMPLIANCE mode) can delete or overwrite that version: a delete only adds a
delete marker, and the locked versions stay restorable. Locks are exempt
because they are replaced and removed in normal operation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

from continuity import settings
from continuity.backup.storage.base import MUTABLE_PREFIX, Backend, NotFound
from continuity.errors import UsageError


class S3Backend(Backend):
    # a GET costs a round trip: batch more widely than on a local disk, still far below a whole pack
    read_window = 8 * 1024 * 1024
    read_gap = 1024 * 1024
    read_threads = 8  # reads wait on the network: overlap them

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None, *,
                 lock_days: int | None = None, lock_mode: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.lock_days = settings.S3_OBJECT_LOCK_DAYS.get() if lock_days is None else lock_days
        self.lock_mode = (lock_mode or settings.S3_OBJECT_LOCK_MODE.get()).upper()
        if self.lock_days < 0 or self.lock_mode not in ("GOVERNANCE", "COMPLIANCE"):
            raise UsageError(f"S3 object lock: {self.lock_days} days in mode {self.lock_mode!r}: want days >= 0 "
                             "and GOVERNANCE or COMPLIANCE")

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}"
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16),
        )

    @classmethod
    def from_url(cls, url: str) -> S3Backend:
        u = urlparse(url)
        if not u.netloc:
            raise ValueError(f"S3 URL needs a bucket: {url!r}")
        return cls(u.netloc, u.path)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _get(self, name: str, rng: str | None = None) -> bytes:
        from botocore.exceptions import ClientError

        try:
            kw = {"Range": rng} if rng else {}
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name), **kw)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                raise NotFound(name) from None
            raise

    def read(self, name: str) -> bytes:
        return self._get(name)

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return self._get(name, f"bytes={offset}-{offset + length - 1}")

    def write(self, name: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        kw = {}
        if self.lock_days and not name.startswith(MUTABLE_PREFIX):
            kw = {"ObjectLockMode": self.lock_mode,
                  "ObjectLockRetainUntilDate": datetime.now(UTC) + timedelta(days=self.lock_days)}
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=bytes(data), **kw)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        from botocore.exceptions import ClientError

        full = self._key(prefix).rstrip("/") + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:], int(obj["Size"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return
            raise

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
                return False
            raise

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            # object lock can only be turned on when the bucket is made (it also turns on versioning)
            self.client.create_bucket(Bucket=self.bucket,
                                      **({"ObjectLockEnabledForBucket": True} if self.lock_days else {}))
