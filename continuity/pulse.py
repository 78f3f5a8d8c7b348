"""The pulse history: every decision and measurement, replayable and tamper-evident.

Each event goes to two places: a Redis Stream (live tail, shared by the fleet)
and an append-only ``pulse_history.jsonl`` (fsync'd, hash-chained: every line
carries the hash of the one before, and a head file carries the hash and count
of the last one). Postmortems and the split-brain check are computed from this
history, so it must be both complete and provably unedited: an edit, deletion,
reorder or truncation breaks the chain at a line ``continuity pulse verify`` names.
Every event is also signed (Ed25519) by the state directory's writer key, so an
edit stays visible even when whoever made it recomputed every hash after it
(:mod:`continuity.pulse_trust` says who signs and whose signatures count).

Redis may be briefly unreachable exactly when events matter most (a broker
restart, a partition); such events are spooled on disk and delivered later.
Delivery is keyed by event id (one Lua script: look the id up among recently
delivered ones, then XADD and remember it), so a spooled event that did reach
Redis before the connection dropped is not delivered twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuity import paths, redact, settings
from continuity.events import PREFIX, EventKind, check_fields  # PREFIX re-exported: readers import it from here
from continuity.pulse_trust import CHECK_EVERY, Trust, keys_dir, mismatch_reason, sign_fields, writer_key
from continuity.signing import SigningKey
from continuity.state import pulse_stream

GENESIS = "0" * 64
STREAM_MAXLEN = 100_000
RETRY_AFTER_S = 2.0
# how many recent event ids are remembered for de-duplication: far more than a spool ever holds
SEEN_MAX = 2 * STREAM_MAXLEN


UNHASHED = ("hash", "signer", "sig")  # the hash covers everything else; the signature covers the hash


def canonical(event: dict[str, Any]) -> bytes:
    body = {k: v for k, v in event.items() if k not in UNHASHED}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def event_hash(event: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _read_head(path: Path) -> dict[str, Any]:
    try:
        return json.loads(_head_path(path).read_text())
    except (FileNotFoundError, ValueError):
        return {"count": 0, "hash": GENESIS}


def _chain_ok(ev: Any, head: dict[str, Any]) -> bool:
    return (isinstance(ev, dict) and ev.get("prev") == head["hash"] and ev.get("seq") == head["count"] + 1
            and ev.get("hash") == event_hash(ev))


def _recover_head(path: Path) -> dict[str, Any]:
    """The chain's true end, repairing what a crash inside :meth:`Pulse.emit` can leave behind.

    A writer killed after appending its line but before updating the head
    would otherwise make the next event reuse a sequence number and link to
    the wrong predecessor, breaking the chain for good. The head records the
    file size it describes: complete, chain-valid lines beyond it whose
    signature verifies with a trusted key are adopted; a torn final line beyond
    it (killed mid-write, so never acknowledged) is cut off. Anything else (a
    file shorter than the head, an edited line, a line appended by someone
    without the writer key) is left alone for ``verify`` to report: repair must
    never hide tampering, nor sign over it. Called with the file lock held.
    """
    head = _read_head(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return head
    if "size" in head:
        start = int(head["size"])
        if size <= start:
            return head
    else:  # no head (or one from before sizes were recorded): rebuild it from the whole file
        head, start = {"count": 0, "hash": GENESIS}, 0
    with open(path, "rb+") as f:
        f.seek(start)
        *complete, torn = f.read().split(b"\n")
        pos, adopted_all = start, True
        trust: Trust | None = None
        for raw in complete:
            try:
                ev = json.loads(raw)
            except ValueError:
                ev = None
            if _chain_ok(ev, head) and trust is None:
                trust = Trust.local(path)
            if not _chain_ok(ev, head) or trust is None or not trust.valid(ev):
                adopted_all = False
                break
            pos += len(raw) + 1
            head = {"count": ev["seq"], "hash": ev["hash"]}
        if adopted_all and torn:
            f.truncate(pos)
            f.flush()
            os.fsync(f.fileno())
    head["size"] = pos
    _write_atomic(_head_path(path), json.dumps(head))
    return head


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Pulse:
    """Writer for the pulse history (file + stream + spool). Safe across processes."""

    def __init__(self, client: Any | None = None, path: Path | None = None, node: str | None = None) -> None:
        self.client = client
        self.path = Path(path) if path else paths.pulse_file()
        self.spool = self.path.with_name(self.path.name + ".spool")
        self.node = node
        self._deliver = functools.partial(pulse_stream.deliver, client) if client is not None else None
        # after a failed delivery, spool without touching Redis for this long: when Redis is
        # black-holed (a partition, not a refusal) every attempt costs a full connect timeout, and
        # the detector or a failover step must not stall on its own bookkeeping
        self.retry_after = RETRY_AFTER_S
        self.seen_max = SEEN_MAX
        self.clock = time.monotonic
        self._down_until = 0.0
        self._key: SigningKey | None = None

    def emit(self, kind: EventKind | str, *, node: str | None = None, service: str | None = None,
             epoch: int | None = None, data: dict[str, Any] | None = None,
             event_id: str | None = None, ts: float | None = None) -> dict[str, Any]:
        """Record one event; returns it as written (with seq, prev and hash).

        The layer's own code passes a :class:`~continuity.events.EventKind` from the catalogue, and
        ``data`` is checked against its declared fields (:func:`~continuity.events.check_fields`:
        raises under test, logs in production, so an emit never fails a failover). A plain string is
        still accepted and written as given, unchecked: tests, benchmarks and replay tools write kinds
        of their own. ``tests/unit/test_events.py`` keeps strings out of continuity/ and workers/.
        """
        if isinstance(kind, EventKind):
            check_fields(kind, data)
            kind = kind.wire
        elif not kind.startswith(PREFIX):
            kind = PREFIX + kind
        event: dict[str, Any] = {
            "id": event_id or uuid.uuid4().hex,
            "ts": ts if ts is not None else time.time(),
            "kind": kind,
            "node": node if node is not None else self.node,
            "service": service,
            "epoch": epoch,
            "data": redact.scrub(data) if data else {},  # by value: a URL or env copied into an event
            "host": socket.gethostname(),
        }
        with _locked(self.path):
            head = _recover_head(self.path)
            event["seq"] = head["count"] + 1
            event["prev"] = head["hash"]
            event["hash"] = event_hash(event)
            if self._key is None:  # created on first use, beside the history (keys/, 0600)
                self._key = writer_key(self.path)
            event.update(sign_fields(self._key, event["hash"]))
            line = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str) + "\n"
            with open(self.path, "ab") as f:
                f.write(line.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            _write_atomic(_head_path(self.path),
                          json.dumps({"count": event["seq"], "hash": event["hash"], "size": size}))
        self._send(event)
        return event

    def _send(self, event: dict[str, Any]) -> None:
        if self.client is None:
            return
        payload = json.dumps(event, sort_keys=True, default=str)
        if self.clock() >= self._down_until:
            try:
                self.flush_spool()
                self._deliver_one(event["id"], payload)
                return
            except Exception:  # noqa: BLE001 - Redis unreachable: keep it for later, never lose it
                self._down_until = self.clock() + self.retry_after
        with _locked(self.spool), open(self.spool, "a", encoding="utf-8") as f:
            f.write(payload + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _deliver_one(self, event_id: str, payload: str) -> int:
        assert self._deliver is not None
        return int(self._deliver(event_id=event_id, payload=payload, maxlen=STREAM_MAXLEN, seen_max=self.seen_max))

    def flush_spool(self) -> int:
        """Deliver spooled events in order; returns how many were newly delivered.

        Raises the client's error if Redis is still unreachable (what was delivered stays
        delivered, the rest stays spooled). Long-running processes call this periodically so a
        spool drains even when no new event comes along to trigger it.
        """
        if self.client is None or not self.spool.exists():
            return 0
        delivered = 0
        with _locked(self.spool):
            try:
                lines = self.spool.read_text(encoding="utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                return 0
            pending = [ln for ln in lines if ln.strip()]
            done = 0
            try:
                for ln in pending:
                    try:
                        ev = json.loads(ln)
                    except ValueError:
                        ev = None
                    if not isinstance(ev, dict) or not ev.get("id"):
                        done += 1  # a torn line from a crash mid-write: the file copy has the event
                        continue
                    delivered += self._deliver_one(str(ev["id"]), ln)
                    done += 1
            finally:
                rest = pending[done:]
                if rest:
                    _write_atomic(self.spool, "".join(r + "\n" for r in rest))
                else:
                    self.spool.unlink(missing_ok=True)
        self._down_until = 0.0
        return delivered


@dataclass
class VerifyResult:
    ok: bool
    count: int
    bad_line: int | None = None
    bad_id: str | None = None
    reason: str = ""
    signers: list[str] | None = None  # key ids whose signatures were checked; None: signatures not checked

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "count": self.count, "bad_line": self.bad_line,
                "bad_id": self.bad_id, "reason": self.reason, "signers": self.signers}


class _Signatures:
    """Signature checks along the walk: every event must name a trusted signer (cheap, checked at once);
    the signature itself is verified every :data:`CHECK_EVERY` events and at the end, and only when that
    fails are the events since the last good one verified one by one, to name the first changed event."""

    def __init__(self, trust: Trust) -> None:
        self.trust = trust
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.signers: set[str] = set()

    def add(self, lineno: int, ev: dict[str, Any]) -> VerifyResult | None:
        problem = self.trust.signer_problem(ev)
        if problem is not None:
            return self.settle() or VerifyResult(False, lineno - 1, lineno, ev.get("id"), problem)
        self.signers.add(ev["signer"])
        self.pending.append((lineno, ev))
        return self.settle() if len(self.pending) >= CHECK_EVERY else None

    def settle(self) -> VerifyResult | None:
        """Verify the newest pending signature (it vouches for all before it); on failure, find the first bad."""
        pending, self.pending = self.pending, []
        if not pending or self.trust.valid(pending[-1][1]):
            return None
        lineno, ev = next((n, e) for n, e in pending if not self.trust.valid(e))
        return VerifyResult(False, lineno - 1, lineno, ev.get("id"), mismatch_reason(ev))


def verify_file(path: Path | None = None, trust: Trust | None = None, *, signatures: bool = True) -> VerifyResult:
    """Walk the chain; the first line whose hash, link, sequence or signature is wrong is reported.

    ``trust`` defaults to the keys of the history's own state directory (:meth:`Trust.local`);
    ``signatures=False`` checks the hash chain only (a history whose writer key is not at hand).
    """
    path = Path(path) if path else paths.pulse_file()
    prev = GENESIS
    count = 0
    head = _read_head(path)
    at_head = GENESIS
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        if head["count"]:
            return VerifyResult(False, 0, 1, None, f"history file missing but head records {head['count']} events")
        return VerifyResult(True, 0)
    sigs: _Signatures | None = None
    if signatures:
        sigs = _Signatures(trust if trust is not None else Trust.local(path))
        if not sigs.trust.keys and os.fstat(fh.fileno()).st_size:
            fh.close()
            return VerifyResult(False, 0, None, None, f"no key to check signatures against: no writer key in "
                                f"{keys_dir(path)} (pass --trust FILE with the writer's public key, or "
                                "--hashes-only)")

    def bad(lineno: int, ev_id: Any, reason: str) -> VerifyResult:
        # a signature that no longer matches, before this line, is the earlier (and truer) place to point at
        return (sigs.settle() if sigs else None) or VerifyResult(False, count, lineno, ev_id, reason)

    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                return bad(lineno, None, "last line is incomplete (the file was cut, or a write was interrupted)")
            try:
                ev = json.loads(line)
            except ValueError:  # includes bytes that are not UTF-8
                return bad(lineno, None, "not valid JSON")
            eid = ev.get("id") if isinstance(ev, dict) else None
            if not isinstance(ev, dict) or "hash" not in ev:
                return bad(lineno, eid, "not a pulse event")
            if ev["hash"] != event_hash(ev):
                return bad(lineno, eid, "content does not match its hash (edited)")
            if ev.get("prev") != prev:
                return bad(lineno, eid, "does not follow the previous event (deleted or reordered lines before it)")
            if ev.get("seq") != count + 1:
                return bad(lineno, eid, f"sequence {ev.get('seq')} where {count + 1} was expected")
            if sigs is not None and (failed := sigs.add(lineno, ev)) is not None:
                return failed
            prev = ev["hash"]
            count += 1
            if count == head["count"]:
                at_head = prev
    if sigs is not None and (failed := sigs.settle()) is not None:
        return failed
    if count < head["count"]:
        return VerifyResult(False, count, count + 1, None,
                            f"history ends at event {count} but the head records {head['count']} events"
                            " (lines removed from the end)")
    if head["count"] and at_head != head["hash"]:
        return VerifyResult(False, count, head["count"], None,
                            f"event {head['count']} does not match the hash the head recorded (history rewritten)")
    # more events than the head knows: a writer died between appending and updating the head; the chain
    # itself is intact and the next emit moves the head forward
    return VerifyResult(True, count, signers=sorted(sigs.signers) if sigs else None)


def chain_length(path: Path | None = None) -> int:
    """Events in the file's chain as its head records them: one small read, where :func:`verify_file` walks the
    whole file (the exporter shows this on every scrape and verifies only now and then)."""
    return int(_read_head(Path(path) if path else paths.pulse_file()).get("count", 0))


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        ev = json.loads(raw)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None


def read_events(path: Path | None = None) -> Iterator[dict[str, Any]]:
    """Events from the file, oldest first; unparsable lines are skipped (verify reports them)."""
    path = Path(path) if path else paths.pulse_file()
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        for raw in fh:
            ev = _parse_line(raw)
            if ev is not None:
                yield ev


def read_from(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete events written after byte ``offset``, and the offset to continue from.

    A line still being written has no newline yet; it is left for the next call
    so a follower never prints half an event. A file shorter than ``offset``
    was replaced, so reading restarts at its beginning.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < offset:
                offset = 0
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    events = [ev for raw in data[:end].split(b"\n") if raw and (ev := _parse_line(raw)) is not None]
    return events, offset + end


def stream_events(client: Any, count: int = 100, after: str = "-") -> list[tuple[str, dict[str, Any]]]:
    """The newest ``count`` events from the Redis Stream as (stream id, event)."""
    return list(reversed(pulse_stream.newest(client, count)))


_default: Pulse | None = None
_default_for: tuple[Path, str | None] | None = None


def default() -> Pulse:
    """Process-wide writer bound to $CONTINUITY_REDIS_URL (file-only if none is set).

    Made again when the history's path or the Redis URL changed since (a process that serves several state
    directories one after another, as a test session does, must not write one fleet's events into another's)."""
    global _default, _default_for
    bound_to = (paths.pulse_file(), settings.REDIS_URL.get())
    if _default is not None and _default_for != bound_to:
        _default = None
    if _default is None:
        client = None
        if settings.REDIS_URL.get():
            from continuity.redisd import connect  # redis-py (~0.4 s): the sample service imports pulse without it

            client = connect(socket_timeout=2)
        _default = Pulse(client=client, node=settings.NODE.get())
        _default_for = bound_to
    return _default


def emit(kind: EventKind | str, **kwargs: Any) -> dict[str, Any]:
    """:meth:`Pulse.emit` on the process-wide writer."""
    return default().emit(kind, **kwargs)
