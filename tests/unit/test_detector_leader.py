"""The detector's leader lease: one holder at a time, renewed only by its holder, terms that only go up.

Key logic on fakeredis; races and expiry on the real redis-server (its clock and TTLs are what the lease means).
"""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest

from continuity.state import detector_leader as dl
from continuity.state import keys
from tests.helpers import wait_for

A = dl.Identity("core-a@h:1:aa", "core-a", "h", 1)
B = dl.Identity("core-b@h:2:bb", "core-b", "h", 2)


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def test_a_free_lease_is_taken_with_a_new_term_and_redis_time(fake) -> None:
    before = float(fake.time()[0])
    claim = dl.claim(fake, A, 1.5)
    assert claim.status == dl.ACQUIRED and claim.leading and claim.term == 1 and claim.now >= before
    leader = dl.read(fake)
    assert (leader.id, leader.node, leader.host, leader.pid, leader.term) == (A.id, "core-a", "h", 1, 1)
    assert leader.since == pytest.approx(claim.now, abs=1e-6)
    assert 1.0 < leader.ttl <= 1.5


def test_only_the_holder_renews_others_are_told_who_holds_it(fake) -> None:
    dl.claim(fake, A, 1.5)
    fake.pexpire(keys.detector_leader(), 200)
    renewed = dl.claim(fake, A, 1.5)
    assert renewed.status == dl.RENEWED and renewed.term == 1
    assert fake.pttl(keys.detector_leader()) > 1000, "a renewal restores the whole lease"
    held = dl.claim(fake, B, 1.5)
    assert held.status == dl.HELD and not held.leading and held.holder == A.id and held.ttl > 1.0
    assert dl.read(fake).id == A.id, "asking does not change the holder"


def test_a_new_holder_gets_the_next_term_and_its_own_identity(fake) -> None:
    dl.claim(fake, A, 1.5)
    fake.delete(keys.detector_leader())  # A's lease lapsed
    claim = dl.claim(fake, B, 1.5)
    assert claim.status == dl.ACQUIRED and claim.term == 2
    assert dl.read(fake).node == "core-b" and dl.read(fake).pid == 2


def test_release_only_by_the_holder(fake) -> None:
    dl.claim(fake, A, 1.5)
    assert not dl.release(fake, B)
    assert dl.read(fake).id == A.id
    assert dl.release(fake, A)
    assert dl.read(fake) is None
    assert dl.claim(fake, B, 1.5).status == dl.ACQUIRED


def test_a_garbage_value_is_no_holder(fake) -> None:
    fake.hset(keys.detector_leader(), mapping={"node": "core-z"})  # no id: written by something else
    assert dl.read(fake) is None
    assert dl.claim(fake, A, 1.5).status == dl.ACQUIRED
    assert dl.read(fake).node == "core-a" and dl.read(fake).term == 1
    assert dl.parse({b"id": b"x", b"pid": b"nan?", b"term": b"7"}, -2) == dl.Leader("x", "", "", None, None, 7, None)


def test_guard_says_whether_the_caller_still_holds_it(fake) -> None:
    dl.claim(fake, A, 1.5)
    with fake.pipeline() as pipe:
        pipe.watch(dl.key())
        assert dl.guard(pipe, A.id) and not dl.guard(pipe, B.id)


# --- real redis-server: its clock, its TTLs, concurrent claimers -------------------------------------------
def test_simultaneous_claims_elect_exactly_one(rds) -> None:
    me = [dl.Identity(f"n{i}@h:{i}:x", f"n{i}", "h", i) for i in range(8)]
    terms: list[int] = []
    for _round in range(30):
        rds.delete(keys.detector_leader())
        start = threading.Barrier(len(me))
        answers: list[dl.Claim] = [None] * len(me)  # type: ignore[list-item]

        def claimer(i: int, start: threading.Barrier, answers: list[dl.Claim]) -> None:
            start.wait()
            answers[i] = dl.claim(rds, me[i], 5.0)  # one pooled client, a connection each

        threads = [threading.Thread(target=claimer, args=(i, start, answers)) for i in range(len(me))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, a in enumerate(answers) if a.leading]
        assert len(winners) == 1, answers
        (w,) = winners
        assert all(a.holder == me[w].id for a in answers if not a.leading)
        terms.append(answers[w].term)
    assert terms == sorted(terms) and len(set(terms)) == len(terms), "every election is a new, higher term"


def test_a_lapsed_lease_passes_to_the_standby_and_the_old_holder_cannot_renew_it(rds) -> None:
    assert dl.claim(rds, A, 0.3).status == dl.ACQUIRED
    taken = wait_for(lambda: (c := dl.claim(rds, B, 5.0)).leading and c, timeout=10, what="B taking the lease")
    assert taken.status == dl.ACQUIRED and taken.term == 2
    late = dl.claim(rds, A, 0.3)
    assert late.status == dl.HELD and late.holder == B.id, "a holder back from a stall finds the lease gone"
    with rds.pipeline() as pipe:
        pipe.watch(dl.key())
        assert not dl.guard(pipe, A.id)


def test_the_lease_never_has_two_holders_under_contention(rds) -> None:
    """Eight claimers, each holding a while then going silent past the TTL: leading answers of different holders
    never overlap in Redis time (an acquisition comes only after the previous holder's last renewal + TTL)."""
    ttl = 0.15
    log: list[tuple[str, str, float]] = []
    lock = threading.Lock()
    stop = time.monotonic() + 3.0

    def claimer(me: dl.Identity, seed: int) -> None:
        n = seed
        while time.monotonic() < stop:
            c = dl.claim(rds, me, ttl)
            if c.leading:
                with lock:
                    log.append((me.id, c.status, c.now))
                n += 1
                if n % 4 == 0:
                    time.sleep(ttl * 1.5)  # go silent: the lease must lapse before anyone else leads
                    continue
            time.sleep(ttl / 5)

    ids = [dl.Identity(f"n{i}@h:{i}:y", f"n{i}", "h", i) for i in range(8)]
    threads = [threading.Thread(target=claimer, args=(me, i)) for i, me in enumerate(ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.sort(key=lambda e: e[2])
    assert len({h for h, _, _ in log}) > 1, "the lease changed hands during the run"
    last_leading: dict[str, float] = {}
    for holder, status, at in log:
        if status == dl.ACQUIRED:
            for other, when in last_leading.items():
                if other != holder:
                    assert at >= when + ttl - 0.002, f"{holder} took the lease {at - when:.3f}s after {other} led"
        last_leading[holder] = at
