"""A compact in-memory table from blob id to a fixed-size record.

Every blob of a repository has an entry in memory while a snapshot, restore,
copy or check runs. As a ``dict`` of ``bytes`` keys to small objects that cost
300-450 bytes per blob (a 200,000-file tree: ~80 MiB), which made peak memory
grow with the file count. Here an entry is its 32-byte id and its packed
record, appended to one ``bytearray``, plus a 4-byte slot in an open-addressed
``array``: ~40 bytes plus the record. Blob ids are keyed BLAKE3 outputs, so
their first 8 bytes are already a uniform hash.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

ID = 32


class BlobTable:
    """Blob id (32 bytes) → ``value_size``-byte record; the first record added for an id wins."""

    __slots__ = ("_mask", "_rec", "_records", "_removed", "_slots", "count", "value_size")

    def __init__(self, value_size: int = 0) -> None:
        self.value_size = value_size
        self._rec = ID + value_size
        self._records = bytearray()
        self._slots = array("I", bytes(4 * 64))  # 0: empty, else record number + 1
        self._mask = 63
        self.count = 0  # records appended, removed ones included
        self._removed = 0

    def _find(self, bid: bytes) -> tuple[int, int]:
        """(slot, record number) of ``bid``; record number -1 and the free slot to use when it is absent."""
        rec, records, slots, mask = self._rec, self._records, self._slots, self._mask
        h = int.from_bytes(bid[:8], "little") & mask
        while True:
            r = slots[h]
            if not r:
                return h, -1
            o = (r - 1) * rec
            if records[o:o + ID] == bid:
                return h, r - 1
            h = (h + 1) & mask

    def __contains__(self, bid: object) -> bool:
        return isinstance(bid, bytes) and len(bid) == ID and self._find(bid)[1] >= 0

    def get(self, bid: bytes) -> bytes | None:
        """The record stored for ``bid``, or None."""
        if not (isinstance(bid, bytes) and len(bid) == ID):
            return None
        r = self._find(bid)[1]
        if r < 0:
            return None
        o = r * self._rec + ID
        return bytes(self._records[o:o + self.value_size])

    def add(self, bid: bytes, value: bytes = b"") -> bool:
        """Store ``value`` for ``bid`` unless it is there already; True when it was added."""
        if len(bid) != ID or len(value) != self.value_size:
            raise ValueError(f"blob table: id of {len(bid)} bytes, record of {len(value)} (want {ID}, "
                             f"{self.value_size})")
        h, r = self._find(bid)
        if r >= 0:
            return False
        self._records += bid
        self._records += value
        self.count += 1
        self._slots[h] = self.count
        if self.count * 2 > len(self._slots):
            self._grow()
        return True

    def remove(self, bid: bytes) -> None:
        """Forget ``bid`` (rare: a reservation given back after a failure). Its record stays, blanked, so
        probing past its slot still works."""
        r = self._find(bid)[1] if len(bid) == ID else -1
        if r >= 0:
            o = r * self._rec
            self._records[o:o + ID] = bytes(ID)
            self._removed += 1

    def _grow(self) -> None:
        size = len(self._slots) * 2
        slots, mask, rec, records = array("I", bytes(4 * size)), size - 1, self._rec, self._records
        for n in range(self.count):
            o = n * rec
            h = int.from_bytes(records[o:o + 8], "little") & mask
            while slots[h]:
                h = (h + 1) & mask
            slots[h] = n + 1
        self._slots, self._mask = slots, mask

    def __len__(self) -> int:
        return self.count - self._removed

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(id, record) for every id, in the order they were added."""
        rec, records, blank = self._rec, self._records, bytes(ID)
        for n in range(self.count):
            o = n * rec
            bid = bytes(records[o:o + ID])
            if bid != blank:
                yield bid, bytes(records[o + ID:o + rec])

    def __iter__(self) -> Iterator[bytes]:
        return (bid for bid, _ in self.items())
