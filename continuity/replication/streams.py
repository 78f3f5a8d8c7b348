"""A ledger on its primary: the log, the standbys following it, how far each got, and where sync writes wait.

One :class:`LedgerStream` per (service, ledger source) on the node holding the
role. Senders (one per connected standby) tail the log through it; every
acknowledgement a standby sends (after its fsync) lands here; a sync write's
"wait for position P" (:meth:`LedgerStream.wait`) blocks on the same condition
until enough standbys acknowledged P. Nothing here does network I/O.

Lag is measured on the primary, which sees both ends: records and bytes
behind are the difference between its end and what the standby acknowledged;
seconds behind is how long ago the oldest change the standby lacks was first
seen here (each time the end moves, the moment is noted).

Sync mode (:meth:`LedgerStream.wait`): a write at end offset P is confirmed
once ``need`` standbys acknowledged P or more. With fewer standbys connected
than that, or when they do not acknowledge within the timeout, the declared
policy decides: ``refuse`` (the write is not acknowledged; it stays in the
primary's log and is shipped later, as PostgreSQL does with a cancelled
synchronous commit) or ``degrade`` (acknowledged asynchronously, the stream
marked degraded until enough standbys are streaming again). While degraded a
write does not wait for a standby that is still catching up, so one slow
standby cannot turn every write into a timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from continuity.replication.ledger import LedgerLog, Position, last_record, seq_of

MAX_MARKS = 100_000


@dataclass
class Peer:
    """One standby of a stream, as its primary knows it."""

    node: str
    connected: bool = False
    streaming: bool = False  # reached the primary's end at least once since it connected
    acked: Position | None = None
    acked_at: float = 0.0
    since: float = 0.0
    sessions: int = 0


@dataclass(frozen=True)
class Lag:
    seconds: float
    records: int
    bytes: int


@dataclass(frozen=True)
class WaitResult:
    """What a sync write learns: ``ok`` (acknowledge it), ``mode`` (sync | degraded | async), who has it, why not."""

    ok: bool
    mode: str
    acked_by: tuple[str, ...] = ()
    reason: str = ""


@dataclass
class LedgerStream:
    service: str
    source: str
    log: LedgerLog
    clock: Callable[[], float] = time.monotonic
    peers: dict[str, Peer] = field(default_factory=dict)
    marks: deque[tuple[int, float]] = field(default_factory=deque)  # (end offset, when first seen)
    degraded: str | None = None  # why writes are acknowledged without standbys (degrade policy), else None
    cond: threading.Condition = field(default_factory=threading.Condition)

    # --- the log ------------------------------------------------------------------------------------------------
    def refresh(self) -> Position:
        """Pick up appends; waiting senders and sync writes are woken when the end moved."""
        with self.cond:
            if self.log.refresh():
                self.marks.append((self.log.end_offset, self.clock()))
                if len(self.marks) > MAX_MARKS:
                    self.marks.popleft()
                self.cond.notify_all()
            return self.log.end

    @property
    def end(self) -> Position:
        with self.cond:
            return self.log.end

    def read(self, frm: Position, max_bytes: int) -> tuple[bytes, Position]:
        with self.cond:
            return self.log.read(frm, max_bytes)

    def match(self, probes: list[Position]) -> Position:
        """Where the standby's history and ours part. When they seem to part inside what we both hold, our own
        bytes there are re-hashed first: if the file changed in place since it was indexed, the index is rebuilt
        and the match taken again (else a standby holding the file's true bytes would be refused for good)."""
        with self.cond:
            at = self.log.best_match(probes)
            above = [p.count for p in probes if at.count < p.count <= self.log.count]
            if above and self.log.stale_between(at.count, min(above)):
                self.log.reindex()
                self.cond.notify_all()
                at = self.log.best_match(probes)
            return at

    def wait_data(self, after: Position, timeout: float) -> Position:
        """The end, once it is past ``after`` or ``timeout`` passed (the sender's idle wait)."""
        with self.cond:
            if self.log.end.count <= after.count:
                self.cond.wait(timeout)
            return self.log.end

    # --- standbys -----------------------------------------------------------------------------------------------
    def connected(self, node: str, at: Position) -> None:
        self.refresh()  # "caught up" is judged against the end as it is now, not as last seen
        with self.cond:
            p = self.peers.setdefault(node, Peer(node))
            p.connected, p.streaming, p.acked, p.acked_at, p.since = True, False, at, self.clock(), self.clock()
            p.sessions += 1
            self._caught_up(p)
            self.cond.notify_all()

    def disconnected(self, node: str) -> None:
        with self.cond:
            p = self.peers.get(node)
            if p is not None:
                p.connected = p.streaming = False
            self.cond.notify_all()

    def ack(self, node: str, at: Position) -> None:
        with self.cond:
            p = self.peers.setdefault(node, Peer(node))
            if p.acked is None or at.count >= p.acked.count:
                p.acked, p.acked_at = at, self.clock()
            self._caught_up(p)
            self._prune()
            self.cond.notify_all()

    def _caught_up(self, p: Peer) -> None:
        if p.connected and p.acked is not None and p.acked.count >= self.log.count:
            p.streaming = True

    def _prune(self) -> None:
        """Forget marks every standby is past (what lag needs is the oldest change someone lacks)."""
        acked = [p.acked.offset for p in self.peers.values() if p.acked is not None]
        low = min(acked) if acked else 0
        while len(self.marks) > 1 and self.marks[1][0] <= low:
            self.marks.popleft()

    def lag(self, node: str) -> Lag | None:
        with self.cond:
            p = self.peers.get(node)
            if p is None or p.acked is None:
                return None
            end = self.log.end
            behind = max(0, end.count - p.acked.count)
            seconds = 0.0
            if behind:
                first = next((t for off, t in self.marks if off > p.acked.offset), None)
                seconds = max(0.0, self.clock() - first) if first is not None else 0.0
            return Lag(seconds, behind, max(0, end.offset - p.acked.offset))

    # --- the committed position -------------------------------------------------------------------------------
    def committed(self, need: int) -> tuple[Position, int | None, float | None]:
        """What clients were told is stored: the end, unless writes wait for ``need`` standbys (sync mode, not
        degraded), then the position ``need`` standbys hold. With the last record's ``seq`` and the moment (this
        stream's clock) that position was first seen, None when it is older than what the stream remembers."""
        with self.cond:
            pos = self.log.end
            if need > 0 and not self.degraded:
                acked = sorted((p.acked.count for p in self.peers.values() if p.acked is not None), reverse=True)
                held = acked[need - 1] if len(acked) >= need else 0
                if held < pos.count:
                    pos = self.log.position(held)
            seen = next((t for off, t in self.marks if off >= pos.offset), None) if pos.count else None
            last_seq = None
            if pos.count:
                rec = last_record(self.log.line(pos.count))
                last_seq = seq_of(rec) if rec is not None else None
            return pos, last_seq, seen

    # --- sync writes --------------------------------------------------------------------------------------------
    def wait(self, offset: int, need: int, timeout: float, policy: str) -> WaitResult:
        """Block until ``need`` standbys hold ``offset`` durably; else follow ``policy`` (refuse | degrade)."""
        self.refresh()
        deadline = time.monotonic() + timeout  # a real wait: real time, whatever clock measures lag
        with self.cond:
            while True:
                have = tuple(sorted(n for n, p in self.peers.items()
                                    if p.connected and p.acked is not None and p.acked.offset >= offset))
                if len(have) >= need:
                    self.degraded = None
                    return WaitResult(True, "sync", have)
                candidates = [p for p in self.peers.values() if p.connected and (p.streaming or not self.degraded)]
                if len(candidates) < need:
                    return self._without(policy, f"{len(candidates)} of {need} standby(s) connected and streaming",
                                         have)
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._without(policy, f"not on {need} standby(s) within {timeout:g}s", have)
                self.cond.wait(left)

    def _without(self, policy: str, why: str, have: tuple[str, ...]) -> WaitResult:
        if policy == "degrade":
            self.degraded = why
            return WaitResult(True, "degraded", have, why)
        return WaitResult(False, "sync", have, why)


@dataclass
class RoundPeer:
    node: str
    connected: bool = False
    acked: str | None = None  # digest of the image / manifest the standby holds
    acked_size: int = 0
    acked_at: float = 0.0
    behind_since: float | None = None
    pending_bytes: int = 0
    sessions: int = 0


@dataclass
class RoundStream:
    """A source replicated in rounds (SQLite images, directory manifests) on its primary: the latest digest seen,
    and each standby's. Lag is how long the standby has lacked a change the primary has (in rounds, so at
    least the source's interval when it changes steadily) and the bytes the last round needed to send it."""

    service: str
    source: str
    clock: Callable[[], float] = time.monotonic
    digest: str | None = None
    size: int = 0
    peers: dict[str, RoundPeer] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, digest: str, size: int) -> None:
        """The primary's copy is now ``digest``: every standby not holding it is behind from now (if not before)."""
        with self.lock:
            if digest == self.digest:
                return
            self.digest, self.size = digest, size
            now = self.clock()
            for p in self.peers.values():
                if p.acked != digest and p.behind_since is None:
                    p.behind_since = now

    def connected(self, node: str, holds: str | None) -> None:
        with self.lock:
            p = self.peers.setdefault(node, RoundPeer(node))
            p.connected, p.acked, p.acked_at = True, holds, self.clock()
            p.acked_size = self.size if holds is not None and holds == self.digest else 0
            p.sessions += 1
            if holds == self.digest:
                p.behind_since = None
            elif p.behind_since is None:
                p.behind_since = self.clock()

    def disconnected(self, node: str) -> None:
        with self.lock:
            if node in self.peers:
                self.peers[node].connected = False

    def sending(self, node: str, size: int) -> None:
        with self.lock:
            self.peers.setdefault(node, RoundPeer(node)).pending_bytes = size

    def acked(self, node: str, digest: str) -> None:
        with self.lock:
            p = self.peers.setdefault(node, RoundPeer(node))
            p.acked, p.acked_at, p.pending_bytes = digest, self.clock(), 0
            if digest == self.digest:
                p.behind_since = None
                p.acked_size = self.size

    def lag(self, node: str) -> Lag | None:
        with self.lock:
            p = self.peers.get(node)
            if p is None:
                return None
            if p.acked == self.digest or p.behind_since is None:
                return Lag(0.0, 0, 0)
            return Lag(max(0.0, self.clock() - p.behind_since), 0, p.pending_bytes)
