"""Store and forward on a satellite's pass schedule, on a simulated clock (issue 13's acceptance).

A satellite with a 90-second pass every 10 minutes and a 1 MiB/s uplink drains a store-and-forward backlog
over successive passes: every copy starts at a pass's start (the beat gate), stops before the pass ends (the
deadline on the throttled backend), never sends a byte twice (content-addressed resume), and nothing is
written outside a pass. The clock is simulated: the token bucket's waits advance it, no test sleeps.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.backup import crypto
from continuity.backup.replicate import copy
from continuity.backup.repository import Repository
from continuity.backup.scheduling import pass_copy, pass_to_start
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.base import Backend, NotFound
from continuity.backup.storage.local import LocalBackend
from continuity.backup.throttle import Clock, Limits, ThrottledBackend
from continuity.passes import Pass, Schedule, load_pass_file

FAST_KDF = {"n": 2**10, "r": 8, "p": 1}
MIB = 1024 * 1024
T0 = 1_796_094_000.0  # 2026-12-01T03:00:00Z


class SimClock:
    """Simulated time: ``sleep`` advances it (the token bucket's waits are the only passage of time)."""

    def __init__(self, t: float) -> None:
        self.t = t
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, d: float) -> None:
        with self._lock:
            self.t += d

    def advance_to(self, t: float) -> None:
        with self._lock:
            assert t >= self.t
            self.t = t

    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)


class CountingBackend(Backend):
    """In memory, recording every write as (simulated time, name, bytes)."""

    def __init__(self, clock: SimClock) -> None:
        self.url = "mem://dst"
        self.objects: dict[str, bytes] = {}
        self.writes: list[tuple[float, str, int]] = []
        self.clock = clock
        self._lock = threading.Lock()

    def read(self, name: str) -> bytes:
        try:
            return self.objects[name]
        except KeyError:
            raise NotFound(name) from None

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        return self.read(name)[offset:offset + length]

    def write(self, name: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        with self._lock:
            self.objects[name] = bytes(data)
            self.writes.append((self.clock.now(), name, len(data)))

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        p = prefix.rstrip("/") + "/"
        return iter([(k, len(v)) for k, v in list(self.objects.items()) if k.startswith(p)])

    def delete(self, name: str) -> None:
        self.objects.pop(name, None)

    def exists(self, name: str) -> bool:
        return name in self.objects


def _backlog(tmp: Path, total: int, snapshots: int) -> Repository:
    """The satellite's local repository holding ``snapshots`` snapshots of fresh random data, ``total`` bytes."""
    src = Repository.init(LocalBackend(str(tmp / "local-repo")), b"pw", kdf=FAST_KDF)
    per = total // snapshots
    for k in range(snapshots):
        d = tmp / f"obs-{k}"
        d.mkdir()
        for j in range(per // (2 * MIB)):
            (d / f"frame-{j}.bin").write_bytes(os.urandom(2 * MIB))
        take_snapshot(src, [Source("directory", str(d))], set_name="telemetry", node_name="sat-1")
    return src


def _ground(mem: CountingBackend, src: Repository) -> None:
    ring = crypto.Keyring.new()
    ring.id_key, ring.chunker_seed = src.keyring.id_key, src.keyring.chunker_seed
    Repository.init(mem, b"pw", kdf=FAST_KDF, keyring=ring)
    mem.writes.clear()  # the ground repository existed before the backlog: count only the copy


def _run_passes(src: Repository, mem: CountingBackend, sim: SimClock, schedule: Schedule, rate: float,
                margin: float, max_passes: int) -> list[dict]:
    """Drive beat's gate and the copy task as the fleet does, one pass after another, until drained."""
    results: list[dict] = []
    last_sent: float | None = None
    # beat polls every few seconds; between passes the gate must never fire
    t = sim.now()
    for _ in range(max_passes):
        nxt = schedule.next_pass(t)
        assert nxt is not None
        probe = (t + nxt.start) / 2 if nxt.start > t else t
        assert pass_to_start(schedule, last_sent, probe, margin) is None or nxt.contains(probe)
        sim.advance_to(max(sim.now(), nxt.start))
        p = pass_to_start(schedule, last_sent, sim.now(), margin)
        assert p == nxt
        last_sent = sim.now()
        assert pass_to_start(schedule, last_sent, sim.now() + 1, margin) is None  # once per pass
        plan = pass_copy(p.end, margin, rate, sim.now(), 16 * MIB)
        assert plan is not None
        dst = Repository.open(ThrottledBackend(mem, Limits(upload=rate), clock=sim.clock(),
                                               deadline=plan.deadline), b"pw")
        res = copy(src, dst, set_name="telemetry", pack_size=plan.pack_size)
        res["pass"] = p
        results.append(res)
        if res["complete"]:
            return results
        t = p.end
    raise AssertionError(f"backlog not drained in {max_passes} passes: {results[-1]}")


def _check(mem: CountingBackend, src: Repository, passes: list[Pass], results: list[dict], rate: float,
           margin: float) -> None:
    # nothing written outside a pass (or inside its closing margin), and no pass carried more than its rate
    for when, name, _n in mem.writes:
        inside = [p for p in passes if p.start <= when <= p.end - margin]
        assert inside, f"{name} written at {when - T0:.1f}s, outside every pass"
    for r in results:
        p = r["pass"]
        sent = sum(n for when, _name, n in mem.writes if p.start <= when <= p.end)
        assert sent <= rate * (p.length - margin) + 1
    # no object written twice, no blob stored twice: what arrived was never sent again
    names = [name for _t, name, _n in mem.writes]
    assert len(names) == len(set(n for n in names if not n.startswith("locks/"))) + \
        sum(1 for n in names if n.startswith("locks/"))
    ground = Repository.open(mem, b"pw")
    blobs: dict[bytes, str] = {}
    for pack, _size in ground.list_packs().items():
        for _typ, bid, *_ in ground.read_pack_header(pack):
            assert bid not in blobs, f"blob {bid.hex()[:12]} sent twice (packs {blobs[bid][:8]}, {pack[:8]})"
            blobs[bid] = pack
    # and the bytes: what crossed the link is the backlog's sealed blobs once, plus each pack's small header
    src_sealed = sum(length for ents in src.index.packs.values() for _typ, _bid, _off, length, _raw in ents)
    packs = [n for _t, name, n in mem.writes if name.startswith("data/")]
    assert sum(packs) <= src_sealed + 4096 * len(packs)
    # and everything arrived: every snapshot is on the ground, and restorable
    got = sorted(s["original"] for s in ground.load_snapshots()[0])
    assert got == sorted(s["id"] for s in src.load_snapshots()[0])


def _schedule_file(tmp: Path, n: int) -> Schedule:
    """A pass-schedule CSV as ground operators keep them: a 90 s pass every 10 minutes."""
    lines = ["satellite,start,duration,station"]
    for k in range(n):
        start = T0 + 120 + 600 * k
        from continuity.passes import iso_time
        lines.append(f"sat-1,{iso_time(start)},PT90S,gs-{k % 3}")
        lines.append(f"sat-2,{iso_time(start + 300)},PT90S,gs-{k % 3}")  # another satellite: not ours
    f = tmp / "passes.csv"
    f.write_text("\n".join(lines) + "\n")
    return Schedule(absolute=load_pass_file(f, "sat-1"))


def test_scaled_backlog_drains_over_passes_without_resending(tmp_path: Path) -> None:
    """Quick: 12 MiB at 64 KiB/s, same shape (a pass moves ~5 MiB, so it takes three passes and each pass's
    end cuts a snapshot in the middle: the next pass must resume inside it)."""
    rate, margin = 64 * 1024.0, 10.0
    src = _backlog(tmp_path, 12 * MIB, 2)
    sim = SimClock(T0)
    mem = CountingBackend(sim)
    _ground(mem, src)
    schedule = _schedule_file(tmp_path, 20)
    results = _run_passes(src, mem, sim, schedule, rate, margin, max_passes=10)
    _check(mem, src, list(schedule.absolute), results, rate, margin)
    assert len(results) >= 3  # it really took several passes: the deadline cut the copy each time
    assert not results[0]["copied"]  # the first pass ended inside the first snapshot


@pytest.mark.parametrize("total_mib", [200])
def test_acceptance_200_mib_at_1_mib_per_s_in_90_s_passes(tmp_path: Path, total_mib: int) -> None:
    """Issue 13's numbers: 200 MiB, 1 MiB/s, a 90 s pass every 10 minutes (simulated clock)."""
    rate, margin = float(MIB), 10.0
    src = _backlog(tmp_path, total_mib * MIB, 4)
    sim = SimClock(T0)
    mem = CountingBackend(sim)
    _ground(mem, src)
    schedule = _schedule_file(tmp_path, 20)
    results = _run_passes(src, mem, sim, schedule, rate, margin, max_passes=10)
    _check(mem, src, list(schedule.absolute), results, rate, margin)
    # 80 usable seconds a pass at 1 MiB/s: 200 MiB needs at least three passes
    assert len(results) >= 3
    sent = sum(n for _t, name, n in mem.writes if name.startswith("data/"))
    assert sent >= total_mib * MIB  # random data: it all had to cross the link, once
