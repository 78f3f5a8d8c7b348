"""A JSON-lines ledger as a replication log: positions, a hash chain, tailing, continuity-checked appends.

A position in a ledger is ``(offset, count, chain)``: the byte offset just past
its ``count``-th complete line, and a chain digest over every line up to there
(``chain_n = blake2b(chain_{n-1} || line_n)``). The chain is what makes resuming
safe: a standby that reconnects after any disconnect says where it is, and the
primary continues from there only if its own chain at that count is the same —
the same offset alone would not do, since a node that was primary and wrote a
tail nobody received has other bytes at the same offsets than the new primary.
Every data frame names the position it starts at and the one it ends at; the
standby applies it only if the start is exactly its own end (no gap, no
overlap, same history) and the end it computes is the one the primary sent.

Only complete lines count: a line still being written (no newline yet) is not
shipped and not part of any position; on a standby, a torn last line (the
replicator was killed mid-write) is cut off when the file is opened, since it
was never acknowledged. The replication sequence that must be contiguous is the
line count with its chain; a record's own sequence field (``seq``, as the sample
ledger writes it) is the application's — clients choose it, so it need not be
contiguous — and is reported as ``last_seq``. Lines are shipped as written: a
standby mirrors its primary byte for byte and never edits history (a line that
is not a JSON object is the application's business, not replication's).

The index (line ends, 8 bytes per record, and chain digests, 12 bytes per record)
is kept in memory, so matching a probe is a lookup, and is built by one pass
over the file when it is opened.

The primary's side only reads (:meth:`LedgerLog.refresh` picks up appends); the
standby's side appends with :meth:`LedgerLog.apply` (``pwrite`` at the expected
offset, then ``fdatasync``, before acknowledging) and cuts a divergent tail off
with :meth:`LedgerLog.cut`, keeping the cut bytes in a file beside the ledger.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIGEST = 12
ZERO = b"\0" * DIGEST
BLOCK = 1024 * 1024
DENSE = 64  # probes sent one per record just below a standby's end


class LedgerError(Exception):
    """A frame that does not fit this copy of the ledger (``reason`` is a short stable word)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Position:
    """Just past the ``count``-th complete line, at byte ``offset``; ``chain`` the digest of everything before."""

    offset: int
    count: int
    chain: str

    def as_list(self) -> list[Any]:
        return [self.offset, self.count, self.chain]

    @staticmethod
    def from_list(value: Any) -> Position:
        try:
            offset, count, chain = value
            if not (isinstance(offset, int) and isinstance(count, int) and isinstance(chain, str)):
                raise TypeError
            if offset < 0 or count < 0 or (count == 0) != (offset == 0):
                raise ValueError
            return Position(offset, count, chain)
        except (TypeError, ValueError):
            raise LedgerError("malformed", f"not a position: {value!r}") from None


GENESIS = Position(0, 0, ZERO.hex())


def chain_next(prev: bytes, line: bytes) -> bytes:
    return hashlib.blake2b(prev + line, digest_size=DIGEST).digest()


def last_record(payload: bytes) -> dict[str, Any] | None:
    """The last record of complete lines, if it is a JSON object (for ``last_seq``; the rest is not parsed: a
    standby mirrors its primary's bytes as they are, the chain proves them, and it never edits history)."""
    for line in reversed(payload.rstrip(b"\n").split(b"\n")[-3:]):
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                return None
            return rec if isinstance(rec, dict) else None
    return None


def seq_of(record: dict[str, Any]) -> int | None:
    value = record.get("seq")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def probe_counts(lo: int, hi: int, dense: int = DENSE) -> list[int]:
    """Counts strictly between ``lo`` and ``hi`` to probe, highest first: every one of the ``dense`` just below
    ``hi``, then exponentially sparser down to ``lo``. A divergence point is found exactly in one round when it
    is recent (the usual case: an unreplicated tail), else in a few more, each narrowing (lo, hi)."""
    out = list(range(hi - 1, max(lo, hi - 1 - dense), -1))
    step = 1
    c = hi - 1 - dense
    while c > lo:
        out.append(c)
        step *= 2
        c -= step
    return out


class LedgerLog:
    """One ledger file, indexed by line. Not thread-safe: its owner serialises access."""

    def __init__(self, path: Path, writable: bool = False) -> None:
        self.path = Path(path)
        self.writable = writable
        self.fd: int | None = None
        self.ino: int | None = None
        self.ends = array("q")
        self.chains = bytearray()
        self.torn = 0  # bytes after the last complete line (a line being written, or a crash's leftover)
        self.last_seq: int | None = None
        self.generation = 0  # bumped when the file was replaced or shrank and had to be re-read

    # --- opening and reading ------------------------------------------------------------------------------------
    def open(self) -> LedgerLog:
        if self.writable:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        else:
            self.fd = os.open(self.path, os.O_RDONLY)
        self.ino = os.fstat(self.fd).st_ino
        self._reset()
        self._scan()
        if self.writable and self.torn:
            os.ftruncate(self.fd, self.end_offset)
            os.fsync(self.fd)
        return self

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _reset(self) -> None:
        self.ends = array("q")
        self.chains = bytearray()
        self.torn = 0
        self.last_seq = None

    @property
    def count(self) -> int:
        return len(self.ends)

    @property
    def end_offset(self) -> int:
        return self.ends[-1] if self.ends else 0

    def chain_at(self, count: int) -> bytes:
        return ZERO if count == 0 else bytes(self.chains[DIGEST * (count - 1):DIGEST * count])

    def position(self, count: int) -> Position:
        if not 0 <= count <= self.count:
            raise IndexError(count)
        return Position(self.ends[count - 1] if count else 0, count, self.chain_at(count).hex())

    @property
    def end(self) -> Position:
        return self.position(self.count)

    def _scan(self) -> None:
        """Index the complete lines after the current end (appends since the last scan)."""
        assert self.fd is not None
        offset = self.end_offset
        prev = self.chain_at(self.count)
        carry = b""
        last_line = b""
        while True:
            block = os.pread(self.fd, BLOCK, offset + len(carry))
            if not block:
                break
            data = carry + block
            start = 0
            while True:
                nl = data.find(b"\n", start)
                if nl < 0:
                    break
                line = data[start:nl + 1]
                prev = chain_next(prev, line)
                self.chains += prev
                self.ends.append(offset + nl + 1)
                last_line = line
                start = nl + 1
            offset += start
            carry = data[start:]
        self.torn = len(carry)
        if last_line:
            try:
                rec = json.loads(last_line)
                self.last_seq = seq_of(rec) if isinstance(rec, dict) else None
            except ValueError:
                self.last_seq = None

    def refresh(self) -> bool:
        """Pick up what was appended (the primary's side); True when the end moved. A file that was replaced or
        shrank (a restore swapped it in) is re-read from the start, and :attr:`generation` says so."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if self.fd is None or st.st_ino != self.ino or st.st_size < self.end_offset + self.torn:
            self.close()
            before = self.end
            self.open()
            self.generation += 1
            return self.end != before
        if st.st_size == self.end_offset + self.torn:
            return False
        count = self.count
        self._scan()
        return self.count != count

    def stale_between(self, lo: int, hi: int) -> bool:
        """Do the file's bytes of lines ``lo+1 .. hi`` no longer hash to the chain this index holds for them?

        The index is built once and then only extended, so a line changed in place (bit rot, or a repair that
        put original bytes back after the index read corrupted ones) leaves it describing a history the file
        no longer has. Re-hashing the lines where two histories seem to part tells a real divergence from a
        stale index, reading only that range."""
        assert self.fd is not None
        if not 0 <= lo < hi <= self.count:
            return False
        start = self.ends[lo - 1] if lo else 0
        data = os.pread(self.fd, self.ends[hi - 1] - start, start)
        prev, at = self.chain_at(lo), 0
        for n in range(lo, hi):
            end = self.ends[n] - start
            prev = chain_next(prev, data[at:end])
            at = end
        return prev != self.chain_at(hi)

    def reindex(self) -> None:
        """Re-read the whole file (the index went stale: :meth:`stale_between`); :attr:`generation` says so."""
        self.close()
        self.open()
        self.generation += 1

    def line(self, count: int) -> bytes:
        """The ``count``-th line (1-based), newline included."""
        assert self.fd is not None
        start = self.ends[count - 2] if count > 1 else 0
        return os.pread(self.fd, self.ends[count - 1] - start, start)

    def read(self, frm: Position, max_bytes: int) -> tuple[bytes, Position]:
        """Complete lines after ``frm`` (at least one if there is one, else as many as fit ``max_bytes``)."""
        assert self.fd is not None
        if frm.count >= self.count:
            return b"", frm
        # the last line that still fits, by binary search over the line ends
        lo, hi = frm.count + 1, self.count
        limit = frm.offset + max_bytes
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.ends[mid - 1] <= limit:
                lo = mid
            else:
                hi = mid - 1
        upto = lo
        data = os.pread(self.fd, self.ends[upto - 1] - frm.offset, frm.offset)
        return data, self.position(upto)

    def holds(self, pos: Position) -> bool:
        """Is ``pos`` a position of this copy (same count, offset and chain)?"""
        return pos.count <= self.count and self.position(pos.count) == pos

    def best_match(self, probes: list[Position]) -> Position:
        """The highest of ``probes`` this copy holds (the genesis if none): where two histories part."""
        for p in sorted(probes, key=lambda p: p.count, reverse=True):
            if self.holds(p):
                return p
        return GENESIS

    def probes(self, lo: int, hi: int) -> list[Position]:
        """This copy's positions at :func:`probe_counts` (``lo``, ``hi``), plus ``hi`` and ``lo`` themselves."""
        counts = [hi, *probe_counts(lo, hi), lo]
        return [self.position(c) for c in counts if 0 <= c <= self.count]

    # --- the standby's side -------------------------------------------------------------------------------------
    def _same_file(self) -> None:
        """The file under our path is still the one we index, with nothing after our end: else stop applying."""
        assert self.fd is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise LedgerError("replaced", f"{self.path} was removed under the replicator") from None
        if st.st_ino != self.ino or os.fstat(self.fd).st_size != self.end_offset:
            raise LedgerError("replaced", f"{self.path} was changed by something else than the replicator")

    def apply(self, start: Position, payload: bytes, end: Position) -> None:
        """Append one frame durably: ``start`` must be this copy's end, and ``end`` what the payload makes of it.

        Written with ``pwrite`` at our end offset and ``fdatasync``'d before returning, so an acknowledgement
        sent after this returns is for data on disk. A frame that does not continue our history (gap, overlap,
        other chain) or whose records are not JSON objects is refused before anything is written.
        """
        assert self.fd is not None and self.writable
        if start != self.end:
            raise LedgerError("discontinuity", f"frame starts at {start.as_list()} but this copy ends at "
                                               f"{self.end.as_list()}")
        if not payload.endswith(b"\n"):
            raise LedgerError("discontinuity", "frame does not end with a complete line")
        ends, chains, prev, off = array("q"), bytearray(), self.chain_at(self.count), start.offset
        pos = 0
        while pos < len(payload):
            nl = payload.index(b"\n", pos)
            prev = chain_next(prev, payload[pos:nl + 1])
            chains += prev
            off += nl + 1 - pos
            ends.append(off)
            pos = nl + 1
        got = Position(off, start.count + len(ends), prev.hex())
        if got != end:
            raise LedgerError("discontinuity", f"frame ends at {got.as_list()} here but at {end.as_list()} on the "
                                               "primary")
        self._same_file()
        os.pwrite(self.fd, payload, start.offset)
        os.fdatasync(self.fd)
        self.ends.extend(ends)
        self.chains += chains
        last = last_record(payload)
        self.last_seq = seq_of(last) if last is not None else None

    def cut(self, to: Position, aside_dir: Path, tag: str) -> tuple[Path, int, int]:
        """Cut everything after ``to`` off this copy, keeping the cut bytes in ``aside_dir`` (never merged).

        The kept file is written and fsync'd before the ledger is truncated, so a crash leaves the bytes
        in one place or both, never in none. Returns (kept file, records cut, bytes cut).
        """
        assert self.fd is not None and self.writable
        if not self.holds(to):
            raise LedgerError("discontinuity", f"cannot cut to {to.as_list()}: not a position of this copy")
        size = os.fstat(self.fd).st_size
        tail = os.pread(self.fd, size - to.offset, to.offset)
        aside_dir.mkdir(parents=True, exist_ok=True)
        kept = aside_dir / f"{self.path.name}.diverged-{tag}-{int(time.time() * 1000)}"
        with open(kept, "wb") as fh:
            fh.write(tail)
            fh.flush()
            os.fsync(fh.fileno())
        cut_records = self.count - to.count
        os.ftruncate(self.fd, to.offset)
        os.fsync(self.fd)
        del self.ends[to.count:]
        del self.chains[DIGEST * to.count:]
        self.torn = 0
        self.last_seq = None
        if to.count:
            try:
                rec = json.loads(self.line(to.count))
                self.last_seq = seq_of(rec) if isinstance(rec, dict) else None
            except ValueError:
                pass
        return kept, cut_records, len(tail)
