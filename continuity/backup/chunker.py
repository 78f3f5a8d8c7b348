"""Content-defined chunking with a per-repository secret.

FastCDC cuts where a rolling gear hash matches a mask. With the public gear
table, chunk boundaries (and hence blob sizes visible in packs) leak
information about content, and known plaintexts can be confirmed by their
size pattern. Each repository therefore XORs the gear table with a secret
63-bit seed from its keyring (what pyfastcdc's ``seed`` does), so boundaries
depend on content *and* a key that only key holders know.

Files smaller than :data:`SPLIT_THRESHOLD` are one blob: splitting them buys no
dedup and costs per-blob overhead (restic does the same under 512 KiB).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pyfastcdc.cy import FastCDC

SPLIT_THRESHOLD = 512 * 1024
MIN_SIZE = 256 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024


class Chunker:
    """Cuts streams into chunks; one instance per thread (pyfastcdc objects are not thread-safe)."""

    def __init__(self, seed: int, *, min_size: int = MIN_SIZE, avg_size: int = AVG_SIZE,
                 max_size: int = MAX_SIZE) -> None:
        if not 0 < seed < 2**63:
            raise ValueError("the chunker seed must be a secret in [1, 2**63) (0 selects the public table)")
        self.seed = seed
        # pyfastcdc shifts the seed left inside a uint64: keep it to 63 bits
        cdc_seed = seed & ((1 << 63) - 1) or 1
        # pyfastcdc's effective average is avg_size + min_size (cut-point skipping)
        self._cdc = FastCDC(max(256, avg_size - min_size), min_size=min_size, max_size=max_size,
                            normalized_chunking=1, seed=cdc_seed)

    def chunks(self, data: bytes | memoryview) -> Iterator[memoryview]:
        """Chunks of an in-memory buffer (views into ``data``)."""
        if len(data) < SPLIT_THRESHOLD:
            if len(data):
                yield memoryview(data)
            return
        for c in self._cdc.cut_buf(data):
            yield c.data

    def stream(self, f: BinaryIO) -> Iterator[bytes]:
        """Chunks of a file object. Each chunk is copied out because pyfastcdc reuses its buffer."""
        for c in self._cdc.cut_stream(f):
            yield bytes(c.data)
