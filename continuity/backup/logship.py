"""Shipped ledger log: what a primary appended between snapshots, in the repository, about once a second.

A snapshot every minute bounds a restore's loss by a minute; a tier-0 ledger
declares seconds. So the node that holds a ledger's role also ships its
appends to the backup repository as *log segments* (the idea of Litestream's
WAL shipping, for JSON-lines ledgers), and a point-in-time restore is the
newest usable snapshot plus the segments after it (:mod:`continuity.backup.pitr`).

A segment is one repository object ``logs/<hash>``, sealed and named by its
hash like every other object (:meth:`Repository.save_file`), holding the
complete lines appended since the previous segment, zstd-compressed, and where
they sit in the ledger: the positions of :mod:`continuity.replication.ledger`
(byte offset, line count, hash chain over every line before) at its start and
end. The chain is what makes the log safe to join: a restore appends a segment
only where its start is exactly the end of what it holds (same count *and*
same chain), so two histories (an old primary's unreplicated tail and the new
primary's writes after a failover) are never mixed; where they fork the one of
the higher epoch, then the later ship, is followed (the fleet went on with it).

Crash safety is the repository's: an object is written to a temp name, fsynced
and renamed, so a shipper killed mid-ship leaves no segment or a whole one; a
restarted shipper finds where to go on from the repository itself (the newest
segment end its own ledger holds, :func:`resume_point`), never from local state
that a lost disk would take with it. Shipping the same lines twice is harmless
(identical segments have the same name; overlapping ones join at the same chain).

Retention: a segment may go once the oldest snapshot kept of its set covers it
(:func:`expired`); the newest segment of each source always stays, so a shipper
restarted after a forget still finds where it was.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from continuity.backup.repository import DamagedError, Repository, decompress
from continuity.backup.repository import _zc as zstd_compressor
from continuity.backup.sources import SEQ_FIELDS
from continuity.replication.ledger import GENESIS, LedgerLog, Position

KIND = "logs"
FORMAT = 1
MAX_SEGMENT = 4 * 1024 * 1024  # bytes of lines per segment: a first ship of a big ledger is cut into pieces
TIME_FIELDS = ("ts", "time", "timestamp")


def record_seq(rec: Any) -> int | None:
    """A record's sequence number (the fields a snapshot's ledger manifest reads), None when it has none."""
    if not isinstance(rec, dict):
        return None
    value = next((rec[k] for k in SEQ_FIELDS if k in rec), None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def record_ts(rec: Any) -> float | None:
    """A record's time of acceptance as unix time (a number, or ISO 8601 text), None when it has none."""
    if not isinstance(rec, dict):
        return None
    from continuity.backup.records import timestamp  # records imports nothing of ours: no cycle, kept local

    for key in TIME_FIELDS:
        if key in rec and not isinstance(rec[key], bool):
            return timestamp(rec[key])
    return None


def parse_line(line: bytes) -> tuple[int | None, float | None]:
    """(seq, ts) of one ledger line; (None, None) for a line that is not a JSON object."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None, None
    return record_seq(rec), record_ts(rec)


def split_lines(payload: bytes) -> list[bytes]:
    """The newline-terminated lines of ``payload`` (each with its newline; a torn end is not a line)."""
    parts = payload.split(b"\n")
    return [p + b"\n" for p in parts[:-1]]


@dataclass(frozen=True)
class Segment:
    """One shipped piece of a ledger: lines ``start.count+1 .. end.count`` of ``source`` in set ``set_name``."""

    set_name: str
    source: str
    node: str
    epoch: int | None
    start: Position
    end: Position
    first_seq: int | None
    last_seq: int | None
    first_ts: float | None
    last_ts: float | None
    shipped: float
    payload: bytes = field(repr=False)
    id: str = ""
    # the highest seq / time of any line (None: some line has none, or unknown): lets a restore take a whole
    # segment that cannot cross its target without parsing each line
    max_seq: int | None = None
    max_ts: float | None = None

    @property
    def records(self) -> int:
        return self.end.count - self.start.count

    def to_doc(self) -> dict[str, Any]:
        return {"format": FORMAT, "set": self.set_name, "source": self.source, "node": self.node,
                "epoch": self.epoch, "start": self.start.as_list(), "end": self.end.as_list(),
                "first_seq": self.first_seq, "last_seq": self.last_seq, "first_ts": self.first_ts,
                "last_ts": self.last_ts, "shipped": self.shipped, "bytes": len(self.payload),
                "max_seq": self.max_seq, "max_ts": self.max_ts,
                "lines": base64.b64encode(zstd_compressor().compress(self.payload)).decode()}

    @classmethod
    def from_doc(cls, doc: Any, sid: str) -> Segment:
        """A stored segment, checked: its lines must hash from its start to its end (else DamagedError)."""
        try:
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            start, end = Position.from_list(doc["start"]), Position.from_list(doc["end"])
            size = int(doc["bytes"])
            payload = decompress(base64.b64decode(doc["lines"]), size)
            if len(payload) != size:
                raise ValueError("length differs from the recorded one")
            seg = cls(str(doc["set"]), str(doc["source"]), str(doc["node"]), doc.get("epoch"), start, end,
                      doc.get("first_seq"), doc.get("last_seq"), doc.get("first_ts"), doc.get("last_ts"),
                      float(doc["shipped"]), payload, sid, doc.get("max_seq"), doc.get("max_ts"))
        except DamagedError:
            raise
        except Exception as exc:  # noqa: BLE001 - any malformed field: the segment is unusable, and says why
            raise DamagedError(f"log segment {sid[:8]}: {exc}") from None
        if walk_chain(start, payload) != end:
            raise DamagedError(f"log segment {sid[:8]}: its lines do not lead from its start to its end")
        return seg

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "set": self.set_name, "source": self.source, "node": self.node, "epoch": self.epoch,
                "start": self.start.count, "end": self.end.count, "records": self.records,
                "first_seq": self.first_seq, "last_seq": self.last_seq, "first_ts": self.first_ts,
                "last_ts": self.last_ts, "shipped": self.shipped, "bytes": len(self.payload)}


def walk_chain(start: Position, payload: bytes, upto: int | None = None) -> Position:
    """The position after the lines of ``payload`` (or after ``upto`` of them) that begin at ``start``."""
    from continuity.replication.ledger import chain_next

    prev, off, count = bytes.fromhex(start.chain), start.offset, start.count
    for i, line in enumerate(split_lines(payload)):
        if upto is not None and i >= upto:
            break
        prev = chain_next(prev, line)
        off += len(line)
        count += 1
    return Position(off, count, prev.hex())


def make_segment(set_name: str, source: str, node: str, epoch: int | None, start: Position, payload: bytes,
                 end: Position, now: float) -> Segment:
    parsed = [parse_line(line) for line in split_lines(payload)]
    first = parsed[0] if parsed else (None, None)
    last = parsed[-1] if parsed else (None, None)
    seqs = [q for q, _t in parsed]
    times = [t for _q, t in parsed]
    max_seq = max(seqs) if seqs and None not in seqs else None  # type: ignore[type-var]
    max_ts = max(times) if times and None not in times else None  # type: ignore[type-var]
    return Segment(set_name, source, node, epoch, start, end, first[0], last[0], first[1], last[1], now, payload,
                   "", max_seq, max_ts)


def save_segment(repo: Repository, seg: Segment) -> str:
    """Write one segment object (sealed, named by its hash, temp+fsync+rename by the backend)."""
    return repo.save_file(KIND, seg.to_doc())


def load_segments(repo: Repository, set_name: str | None = None,
                  source: str | None = None) -> tuple[list[Segment], dict[str, str]]:
    """Every readable segment (of ``set_name`` / ``source`` when given), by start count then ship time, and
    {id: reason} for the damaged ones (named, never used)."""
    good: list[Segment] = []
    bad: dict[str, str] = {}
    for name, _size in repo.backend.list(KIND):
        sid = name.split("/")[-1]
        try:
            seg = Segment.from_doc(repo.load_file(KIND, sid), sid)
        except DamagedError as exc:
            bad[sid] = str(exc)
            continue
        if (set_name is None or seg.set_name == set_name) and (source is None or seg.source == source):
            good.append(seg)
    good.sort(key=lambda s: (s.start.count, s.shipped, s.id))
    return good, bad


def has_segments(repo: Repository) -> bool:
    """Does the repository hold any shipped log (one listing, nothing read)?"""
    return next(iter(repo.backend.list(KIND)), None) is not None


def resume_point(log: LedgerLog, segments: Iterable[Segment]) -> Position:
    """Where a (re)started shipper goes on: the furthest segment end this node's ledger holds, else the start.

    Derived from the repository, not from a file of the shipper's: a shipper killed mid-ship, restarted, or
    started on the new primary after a failover (whose ledger holds the replicated prefix) continues without a
    gap, and one whose ledger holds none of it (a replaced disk) ships from the first line.
    """
    best = GENESIS
    for seg in segments:
        if seg.end.count > best.count and log.holds(seg.end):
            best = seg.end
    return best


@dataclass
class ShipResult:
    """What one ship did: segments written, lines and bytes shipped, and the position shipped up to."""

    segments: list[str]
    records: int
    bytes: int
    position: Position

    def as_dict(self) -> dict[str, Any]:
        return {"segments": self.segments, "records": self.records, "bytes": self.bytes,
                "position": self.position.as_list()}


class LedgerShipper:
    """Ships one ledger file of this node to one set's log; the caller decides when (and whether it may).

    Not thread-safe. ``ship()`` picks up what was appended since the last ship and writes it as segments of
    at most :data:`MAX_SEGMENT` bytes; nothing appended, nothing written.
    """

    def __init__(self, repo: Repository, set_name: str, source: str, path: Any, node: str,
                 max_segment: int = MAX_SEGMENT) -> None:
        self.repo = repo
        self.set_name = set_name
        self.source = source
        self.node = node
        self.max_segment = max_segment
        self.log = LedgerLog(path)
        self.at: Position | None = None
        self.generation = -1

    def resume(self) -> Position:
        """Find where to go on from (:func:`resume_point`); the ledger must exist (FileNotFoundError else)."""
        if self.log.fd is None:
            self.log.open()
        segs, _bad = load_segments(self.repo, self.set_name, self.source)
        self.at = resume_point(self.log, segs)  # the segments (and their lines) are not kept: memory stays flat
        self.generation = self.log.generation
        return self.at

    def ship(self, epoch: int | None = None, now: float | None = None) -> ShipResult | None:
        """Ship what is new; None when the ledger does not exist (yet)."""
        if self.log.fd is None:
            try:
                self.log.open()
            except FileNotFoundError:
                return None
            self.at = None
        else:
            self.log.refresh()
        if self.at is None or self.log.generation != self.generation or not self.log.holds(self.at):
            self.resume()  # first ship, or the file was replaced (a restore swapped it in)
        assert self.at is not None
        written: list[str] = []
        records = size = 0
        while self.at.count < self.log.count:
            payload, end = self.log.read(self.at, self.max_segment)
            seg = make_segment(self.set_name, self.source, self.node, epoch, self.at, payload, end,
                               time.time() if now is None else now)
            written.append(save_segment(self.repo, seg))
            records += end.count - self.at.count
            size += len(payload)
            self.at = end
        return ShipResult(written, records, size, self.at)

    def close(self) -> None:
        self.log.close()


def expired(segments: list[Segment], oldest_snapshot_ts: float | None, oldest_records: int | None) -> list[Segment]:
    """Segments the oldest kept snapshot covers: shipped before it was taken and ending at or before its last
    ledger line. The newest segment of each source is always kept (a restarted shipper resumes from it)."""
    if oldest_snapshot_ts is None or oldest_records is None:
        return []
    newest: dict[str, Segment] = {}
    for seg in segments:
        cur = newest.get(seg.source)
        if cur is None or (seg.end.count, seg.shipped) > (cur.end.count, cur.shipped):
            newest[seg.source] = seg
    keep = {s.id for s in newest.values()}
    return [s for s in segments if s.id not in keep and s.shipped < oldest_snapshot_ts
            and s.end.count <= oldest_records]


def delete_segments(repo: Repository, segments: Iterable[Segment]) -> int:
    n = 0
    for seg in segments:
        repo.backend.delete(f"{KIND}/{seg.id}")
        n += 1
    return n


def iter_records(payload: bytes) -> Iterator[tuple[bytes, int | None, float | None]]:
    for line in split_lines(payload):
        seq, ts = parse_line(line)
        yield line, seq, ts
