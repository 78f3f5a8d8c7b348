"""Point-in-time recovery of a ledger: the newest usable snapshot plus the shipped log, cut exactly at a target.

:func:`recover_ledger` is the pure core (it reads the repository, writes
nothing): given a set and a target — ``seq=N`` (every record before the first
whose seq is above N) or ``at=T`` (every record before the first accepted
after T, by its ``ts``) — it returns the exact ledger prefix as bytes, with
where it came from. :func:`write_ledger` puts it on disk (temp, fsync,
rename) and proves the file holds exactly those lines.

How the prefix is built: a base (a snapshot of the set whose ledger ends at
or before the target, newest first; or an empty ledger when the log reaches
back to the first line), then log segments joined by their hash chain
(:mod:`continuity.backup.logship`): a segment is used only where the lines so
far hash to the chain it records at that point, so the result is a history
the primary actually had, never a splice of two. Where histories fork (an old
primary's shipped tail beside the new primary's), the branch of the higher
epoch, then the later ship, wins. A target the kept snapshots and segments
cannot reach is refused with what *is* reachable, never approximated.

Why the base must end at or before the target: the base snapshot's other
files (the sample service's SQLite database) are restored beside the ledger,
and must not hold records the cut ledger does not.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from continuity.backup.logship import Segment, load_segments, parse_line, split_lines, walk_chain
from continuity.backup.records import timestamp
from continuity.backup.repository import Repository
from continuity.backup.restore import walk
from continuity.errors import ContinuityError, UsageError
from continuity.replication.ledger import GENESIS, Position


class PitrUnavailable(UsageError):
    """The target is outside what the repository's snapshots and shipped log reach (exit 2: ask for less)."""


@dataclass(frozen=True)
class Target:
    """Where to stop: after the last record with seq <= ``seq``, or accepted at or before ``at`` (unix time);
    neither: the newest record anything kept holds."""

    seq: int | None = None
    at: float | None = None

    def __post_init__(self) -> None:
        if self.seq is not None and self.at is not None:
            raise UsageError("point-in-time restore takes one of --seq and --at, not both")

    def past(self, seq: int | None, ts: float | None) -> bool:
        """Is a record with this seq / time after the target (so it and everything after it is cut)?"""
        if self.seq is not None:
            return seq is not None and seq > self.seq
        return ts is not None and self.at is not None and ts > self.at

    @property
    def everything(self) -> bool:
        return self.seq is None and self.at is None

    def clears(self, seg: Segment) -> bool:
        """Does every line of ``seg`` come at or before the target (from its recorded maxima, no parsing)?"""
        if self.everything:
            return True
        if self.seq is not None:
            return seg.max_seq is not None and seg.max_seq <= self.seq
        return seg.max_ts is not None and self.at is not None and seg.max_ts <= self.at

    def describe(self) -> str:
        if self.seq is None and self.at is None:
            return "the newest record"
        return f"seq {self.seq}" if self.seq is not None else f"time {self.at}"


@dataclass(frozen=True)
class RecoveredLedger:
    """An exact ledger prefix and its provenance; ``data`` is the ledger's bytes (complete lines)."""

    set_name: str
    source: str
    target_seq: int | None
    target_at: float | None
    base_snapshot: str | None  # None: built from the log alone, from the first line
    base_records: int
    segments: int  # segments that contributed lines
    records: int
    last_seq: int | None
    last_ts: float | None
    position: Position
    newest_seq: int | None  # the newest record anything kept could restore (what was not asked for)
    newest_ts: float | None
    data: bytes

    @property
    def records_from_log(self) -> int:
        return self.records - self.base_records

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["data"]
        out["position"] = self.position.as_list()
        out["records_from_log"] = self.records_from_log
        return out


def ledger_sources(snap: dict[str, Any]) -> list[str]:
    return [src["name"] for src in snap.get("sources", []) if src.get("kind") == "ledger" and src.get("manifest")]


def _snapshot_file(repo: Repository, snap: dict[str, Any], name: str) -> bytes:
    for rel, node in walk(repo, snap["tree"]):
        if rel == name and node.get("type") == "file":
            return b"".join(repo.read_blob(bytes.fromhex(c)) for c in node.get("content") or ())
    raise ContinuityError(f"snapshot {snap['id'][:8]} has no file {name!r}")


def _manifest(snap: dict[str, Any], source: str) -> dict[str, Any]:
    for src in snap.get("sources", []):
        if src.get("name") == source and src.get("kind") == "ledger":
            return dict(src.get("manifest") or {})
    return {}


def pick_source(snaps: list[dict[str, Any]], segments: list[Segment], source: str | None) -> str:
    names = sorted({n for s in snaps for n in ledger_sources(s)} | {g.source for g in segments})
    if source is not None:
        if source not in names:
            raise UsageError(f"no ledger {source!r} in this set (ledgers: {', '.join(names) or 'none'})")
        return source
    if not names:
        raise PitrUnavailable("this set has no ledger snapshot and no shipped log: nothing to restore to a point")
    if len(names) > 1:
        raise UsageError(f"the set holds several ledgers ({', '.join(names)}): name one")
    return names[0]


class _Log:
    """Segments indexed for joining: by start count, and all of them for a join in the middle of one."""

    def __init__(self, segments: list[Segment]) -> None:
        self.all = segments
        self.by_start: dict[int, list[Segment]] = {}
        for s in segments:
            self.by_start.setdefault(s.start.count, []).append(s)

    def next(self, at: Position) -> tuple[Segment, int] | None:
        """The segment continuing history at ``at`` (and how many of its lines ``at`` already has), if any."""
        exact = [s for s in self.by_start.get(at.count, ()) if s.start == at and s.end.count > at.count]
        found = [(s, 0) for s in exact]
        if not found:  # a base (snapshot) ending inside a segment: check the chain at that line
            for s in self.all:
                if s.start.count < at.count < s.end.count:
                    skip = at.count - s.start.count
                    if walk_chain(s.start, s.payload, skip) == at:
                        found.append((s, skip))
        if not found:
            return None
        return max(found, key=lambda f: (f[0].epoch or 0, f[0].shipped, f[0].end.count))


def _extend(base: bytes, base_pos: Position, log: _Log, target: Target | None) -> tuple[bytes, Position, int, bool]:
    """Join segments after the base; stop at the target. (bytes, end, segments used, target passed)."""
    parts, pos, used = [base], base_pos, 0
    while True:
        nxt = log.next(pos)
        if nxt is None:
            return b"".join(parts), pos, used, False
        seg, skip = nxt
        if target is None or target.clears(seg):  # the whole rest of it: its end is verified, nothing to parse
            parts.append(seg.payload if skip == 0 else b"".join(split_lines(seg.payload)[skip:]))
            pos = seg.end
            used += 1
            continue
        lines = split_lines(seg.payload)[skip:]
        took = 0
        for line in lines:
            if target.past(*parse_line(line)):
                break
            took += 1
        if took:
            chunk = b"".join(lines[:took])
            parts.append(chunk)
            pos = seg.end if took == len(lines) else walk_chain(pos, chunk)
            used += 1
        if took < len(lines):
            return b"".join(parts), pos, used, True


def _cut(data: bytes, target: Target) -> tuple[bytes, bool]:
    """``data`` up to the first record past the target; True when something was cut."""
    out = 0
    for line in split_lines(data):
        if target.past(*parse_line(line)):
            return data[:out], True
        out += len(line)
    return data, False


def _last(data: bytes) -> tuple[int | None, float | None]:
    for line in reversed(split_lines(data)):
        seq, ts = parse_line(line)
        if seq is not None or ts is not None:
            return seq, ts
    return None, None


def recover_ledger(repo: Repository, set_name: str, *, seq: int | None = None, at: float | None = None,
                   source: str | None = None) -> RecoveredLedger:
    """The exact ledger prefix of ``set_name`` up to ``seq`` or ``at``, from snapshots plus the shipped log.

    Raises :class:`PitrUnavailable` (a usage error, exit 2) when the target is beyond the newest record anything
    kept holds (for ``seq``) or before the oldest base (a snapshot ending at or before it, or the log from the
    first line). Reads only; the caller writes the bytes (:func:`write_ledger`).
    """
    target = Target(seq, at)
    snaps = [s for s in repo.load_snapshots()[0] if s.get("set") == set_name]
    all_segments, _bad = load_segments(repo, set_name)
    name = pick_source(snaps, all_segments, source)
    log = _Log([s for s in all_segments if s.source == name])
    snaps = [s for s in snaps if name in ledger_sources(s)]

    # the newest record anything kept reaches: from the newest snapshot (or the first line) through the log
    newest_base = snaps[-1] if snaps else None
    full = _snapshot_file(repo, newest_base, name) if newest_base else b""
    full, _pos, _n, _ = _extend(full, walk_chain(GENESIS, full), log, None)
    newest_seq, newest_ts = _last(full)
    if target.seq is not None and (newest_seq is None or target.seq > newest_seq):
        raise PitrUnavailable(f"seq {target.seq} is not in the repository: the newest recoverable record of "
                              f"{set_name} is seq {newest_seq}")

    bases: list[dict[str, Any] | None] = [*reversed(snaps), None]
    for snap in bases:
        if snap is not None:
            man = _manifest(snap, name)
            last = man.get("last_seq")
            if target.seq is not None and isinstance(last, int) and last > target.seq:
                continue
            if target.at is not None and (timestamp(snap.get("time")) or 0) > target.at:
                continue
            base = _snapshot_file(repo, snap, name)
            base, cut = _cut(base, target)
            if cut:
                continue  # the snapshot holds records past the target: an older base keeps its files consistent
        else:
            base = b""
        base_pos = walk_chain(GENESIS, base)
        data, pos, used, passed = _extend(base, base_pos, log, target)
        reached_seq, reached_ts = _last(data)
        if target.seq is not None and not passed and reached_seq != target.seq:
            continue  # this base's chain does not reach the target (a gap the log does not bridge)
        if snap is None and not log.by_start.get(0) and (snaps or log.all):
            break  # no base: the log no longer reaches back to the first line
        return RecoveredLedger(set_name, name, target.seq, target.at, snap["id"] if snap else None,
                               base_pos.count, used, pos.count, reached_seq, reached_ts, pos, newest_seq, newest_ts,
                               data)
    raise PitrUnavailable(f"{target.describe()} is not reachable for {set_name}: no kept snapshot ends before it "
                          "and the shipped log does not reach back that far (newest recoverable: seq "
                          f"{newest_seq})")


def write_ledger(rec: RecoveredLedger, path: Path) -> int:
    """Write the recovered ledger at ``path`` (temp, fsync, rename, fsync dir) and prove it: the file must hash
    to the recovered position. Returns its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.pitr-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(rec.data)
        fh.flush()
        os.fsync(fh.fileno())
    if walk_chain(GENESIS, tmp.read_bytes()) != rec.position:
        tmp.unlink(missing_ok=True)
        raise ContinuityError(f"{path}: the written ledger does not hash to the recovered position")
    os.replace(tmp, path)
    fd = os.open(str(path.parent), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(rec.data)


def base_snapshot(repo: Repository, rec: RecoveredLedger) -> dict[str, Any] | None:
    return repo.find_snapshot(rec.base_snapshot) if rec.base_snapshot else None


def pitr_drill(repo: Repository, set_name: str, sandbox: Path | None = None) -> dict[str, Any] | None:
    """The restore drill's point-in-time check of a set that ships its ledger log; None when it ships none.

    Proves three things a restore at any point depends on: every segment object is intact; the log joins
    without a gap from a kept base all the way to the furthest shipped line (a restore to the newest record
    reaches it); and a restore to a seq in the middle of the log is exactly the prefix of the newest restore up
    to that record (nothing after it, nothing missing before it). With ``sandbox`` the newest ledger is also
    written there and re-read (:func:`write_ledger` proves the file hashes to the recovered position).
    """
    from continuity.backup.logship import load_segments

    segments, bad = load_segments(repo, set_name)
    if not segments and not bad:
        return None
    out: dict[str, Any] = {"segments": len(segments), "damaged_segments": bad, "ok": False, "reason": ""}
    if bad:
        out["reason"] = f"{len(bad)} damaged log segment(s): " + "; ".join(list(bad.values())[:3])
        return out
    try:
        newest = recover_ledger(repo, set_name)
    except ContinuityError as exc:
        out["reason"] = f"no point-in-time restore possible: {exc}"
        return out
    shipped = max(s.end.count for s in segments if s.source == newest.source)
    out.update(newest_seq=newest.newest_seq, newest_ts=newest.newest_ts, records=newest.records,
               log_end=shipped, base_snapshot=newest.base_snapshot)
    if newest.records < shipped:
        out["reason"] = (f"the log does not join up: a restore reaches line {newest.records} of {newest.source}, "
                         f"segments were shipped up to line {shipped}")
        return out
    if sandbox is not None:
        write_ledger(newest, sandbox / f"pitr-{newest.source}")
    # a seq in the middle of the log (the middle line of the middle segment on the restored history): the restore
    # to it must be the newest restore's bytes up to the end of that line, and nothing else
    on_chain = [g for g in segments if g.source == newest.source and g.end.count <= newest.records
                and newest.data[g.start.offset:g.end.offset] == g.payload]
    if on_chain:
        seg = on_chain[len(on_chain) // 2]
        lines = split_lines(seg.payload)
        k = len(lines) // 2
        mid = parse_line(lines[k])[0]
        if mid is not None:
            upto = seg.start.offset + sum(len(line) for line in lines[:k + 1])
            part = recover_ledger(repo, set_name, seq=mid)
            out["checked_seq"] = mid
            if part.data != newest.data[:upto] or part.last_seq != mid:
                out["reason"] = (f"a restore to seq {mid} is not the ledger prefix up to it ({part.records} records, "
                                 f"last seq {part.last_seq}; expected {seg.start.count + k + 1} records)")
                return out
    out["ok"] = True
    return out
