"""A blob table kept in a temporary file, so a restore's memory does not grow with the repository.

A restore looks up where every blob of the snapshot lies. Held in memory (even
as compactly as :class:`~continuity.backup.blobtable.BlobTable`, ~80 bytes a
blob) that table was the one part of a restore that grew with the file count:
a 400,000-file restore peaked 20 % above a 200,000-file one. Here the records
(id and location, 49 bytes) go to an unlinked temporary file under
``$TMPDIR``, grouped into hash buckets of about :data:`PER_BUCKET` records;
memory holds only each bucket's start and size (12 bytes per bucket, a quarter
of a byte per blob). A lookup reads its bucket with one ``pread`` and searches
it in C (``bytes.find``).

Built in two passes, both sequential on the records: ``add`` appends them in
arrival order and counts each bucket; :meth:`seal` writes each record to its
place among its bucket's. Within a bucket records keep their arrival order, so
the first record added for an id wins, as in the in-memory table. Records
added after sealing (rare: a pack recovered later) stay in memory.
"""

from __future__ import annotations

import os
import tempfile
import threading
from array import array
from collections.abc import Iterator
from typing import Any

from continuity.backup.blobtable import ID, BlobTable
from continuity.errors import ContinuityError

PER_BUCKET = 32  # records a bucket holds on average: one ~1.5 KiB read per lookup
BLOCK = 1 << 20  # bytes of records buffered before they go to the file (and read at a time)


class SpillFailed(ContinuityError):
    """The temporary file could not be written (a full or read-only ``$TMPDIR``): said in one line."""


def _failed(exc: OSError, rec: int, count: int) -> SpillFailed:
    return SpillFailed(f"cannot keep the restore index in {tempfile.gettempdir()}: {exc.strerror or exc} "
                       f"(it needs {rec} bytes a blob, {rec * count * 2 // 2**20 + 1} MiB here while it is "
                       f"built; point $TMPDIR at a directory with room)")


class SpilledTable:
    """Blob id (32 bytes) → ``value_size``-byte record, in a temporary file; ``expected`` sizes the buckets."""

    def __init__(self, value_size: int, expected: int, directory: str | None = None) -> None:
        self.value_size = value_size
        self._rec = ID + value_size
        buckets = 1 << max(0, max(1, expected // PER_BUCKET) - 1).bit_length()
        self._mask = buckets - 1
        self._counts = array("I", bytes(4 * buckets))
        self._starts: array[int] | None = None
        self._dir = directory
        self._arrivals = tempfile.TemporaryFile(dir=directory)  # records in the order they came
        self._file_obj: Any = None  # the bucketed records, once sealed
        self._file: int | None = None
        self._buf = bytearray()
        self._late = BlobTable(value_size)  # added after sealing
        self._lock = threading.Lock()
        self.count = 0

    def _bucket(self, bid: bytes | bytearray | memoryview) -> int:
        return int.from_bytes(bid[:8], "little") & self._mask

    def add(self, bid: bytes, value: bytes = b"") -> bool:
        """Store ``value`` for ``bid``; a later record for the same id is kept but never found."""
        if len(bid) != ID or len(value) != self.value_size:
            raise ValueError(f"blob table: id of {len(bid)} bytes, record of {len(value)} (want {ID}, "
                             f"{self.value_size})")
        if self._starts is not None:
            return self.get(bid) is None and self._late.add(bid, value)
        self._buf += bid
        self._buf += value
        self._counts[self._bucket(bid)] += 1
        self.count += 1
        if len(self._buf) >= BLOCK:
            try:
                self._arrivals.write(self._buf)
            except OSError as exc:
                raise _failed(exc, self._rec, self.count) from None
            self._buf = bytearray()
        return True

    def seal(self) -> None:
        """Place every record in its bucket (one pass over the arrivals); lookups work from here on."""
        with self._lock:
            if self._starts is not None:
                return
            try:
                self._seal()
            except OSError as exc:
                raise _failed(exc, self._rec, self.count) from None

    def _seal(self) -> None:
        self._arrivals.write(self._buf)
        self._buf = bytearray()
        self._arrivals.flush()
        starts, pos = array("Q", bytes(8 * (len(self._counts) + 1))), 0
        for b, n in enumerate(self._counts):
            starts[b] = pos
            pos += n * self._rec
        starts[len(self._counts)] = pos
        fill = array("Q", starts)
        self._file_obj = tempfile.TemporaryFile(dir=self._dir)
        fd, rec, mask, src = self._file_obj.fileno(), self._rec, self._mask, self._arrivals.fileno()
        offset, block_size = 0, BLOCK - BLOCK % rec
        while block := os.pread(src, block_size, offset):
            offset += len(block)
            view = memoryview(block)
            for o in range(0, len(block), rec):
                b = int.from_bytes(view[o:o + 8], "little") & mask
                os.pwrite(fd, view[o:o + rec], fill[b])
                fill[b] += rec
        self._arrivals.close()
        self._file, self._starts = fd, starts

    def _find(self, bid: bytes) -> bytes | None:
        if self._starts is None:
            self.seal()
        assert self._starts is not None and self._file is not None
        b = self._bucket(bid)
        start, end = self._starts[b], self._starts[b + 1]
        if end > start:
            bucket = os.pread(self._file, end - start, start)
            at = bucket.find(bid)
            while at >= 0:
                if at % self._rec == 0:
                    return bucket[at + ID:at + self._rec]
                at = bucket.find(bid, at + 1)
        return self._late.get(bid) if len(self._late) else None

    def __contains__(self, bid: object) -> bool:
        return isinstance(bid, bytes) and len(bid) == ID and self._find(bid) is not None

    def get(self, bid: bytes) -> bytes | None:
        """The record stored for ``bid``, or None."""
        if not (isinstance(bid, bytes) and len(bid) == ID):
            return None
        return self._find(bid)

    def __len__(self) -> int:
        """Records added (an id added twice counts twice: the arrivals are never searched while adding)."""
        return self.count + len(self._late)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(id, record) for every record, bucket by bucket (ids added twice: the first record only)."""
        self.seal()
        assert self._starts is not None and self._file is not None
        rec, offset, end = self._rec, 0, self._starts[len(self._counts)]
        while offset < end:
            block = os.pread(self._file, min(BLOCK - BLOCK % rec, end - offset), offset)
            offset += len(block)
            for o in range(0, len(block), rec):
                bid = block[o:o + ID]
                if self._find(bid) == block[o + ID:o + rec]:
                    yield bid, block[o + ID:o + rec]
        yield from self._late.items()

    def __iter__(self) -> Iterator[bytes]:
        return (bid for bid, _ in self.items())

    def close(self) -> None:
        if self._file is not None:
            self._file_obj.close()
            self._file = None
        self._arrivals.close()
