"""Whether a standby may apply data: the sender must hold the lease (proven by a reading with its TTL) at that
epoch, and the epoch must not be below one already applied."""

from __future__ import annotations

import fakeredis
import pytest

from continuity.replication import authority
from continuity.replication.authority import LeaseView, LeaseWatch, judge
from continuity.state import epochs, keys, leases


def view(node: str | None = "a", epoch: int = 3, valid_until: float = 10.0) -> LeaseView:
    return LeaseView("ledger", node, epoch, 0.0, valid_until)


@pytest.mark.parametrize(("sender", "epoch", "lease", "highest", "now", "want"), [
    ("a", 3, view(), 0, 5.0, None),
    ("a", 3, view(), 3, 5.0, None),
    ("b", 3, view(), 0, 5.0, authority.NOT_HOLDER),  # a node that no longer holds the lease
    ("a", 3, view(node=None), 0, 5.0, authority.NOT_HOLDER),  # nobody holds it
    ("a", 2, view(), 0, 5.0, authority.STALE_EPOCH),  # the holder's older epoch (a session from before a fence)
    ("a", 4, view(), 0, 5.0, authority.UNCONFIRMED),  # newer than our reading: read again
    ("a", 3, view(), 4, 5.0, authority.BELOW_APPLIED),  # Redis handed an old lease back
    ("a", 3, view(), 0, 10.0, authority.UNCONFIRMED),  # the reading no longer proves anything
    ("a", 3, None, 0, 0.0, authority.UNCONFIRMED),
])
def test_judge(sender: str, epoch: int, lease: LeaseView | None, highest: int, now: float, want: str | None) -> None:
    assert judge(sender, epoch, lease, highest, now) == want


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_reading_proves_the_holder_until_its_ttl_minus_the_margin_from_when_it_was_sent() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    assert leases.bootstrap(r, "ledger", "a", ttl=2.0)
    clock = Clock()
    watch = LeaseWatch(r, ["ledger"], margin=0.2, clock=clock)
    assert watch.refresh()
    v = watch.view("ledger")
    assert v is not None and v.node == "a" and v.epoch == 1
    assert 100.0 + 1.7 <= v.valid_until <= 100.0 + 1.8
    clock.t = 101.7
    assert watch.check("a", 1, "ledger") is None
    clock.t = v.valid_until
    assert watch.check("a", 1, "ledger") == authority.UNCONFIRMED  # Redis silent since: wait, do not apply


def test_after_a_fence_the_old_holder_is_refused_at_the_next_reading() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    assert leases.bootstrap(r, "ledger", "a", ttl=2.0)
    watch = LeaseWatch(r, ["ledger"], clock=Clock())
    watch.refresh()
    assert watch.check("a", 1, "ledger") is None
    r.delete(keys.lease("ledger"))  # expired
    assert epochs.bump_epoch(r, "ledger", 1, candidate="b") == 2
    assert leases.acquire(r, "ledger", "b", 2, ttl=2.0)
    watch.refresh()
    assert watch.check("a", 1, "ledger") == authority.NOT_HOLDER
    assert watch.check("b", 2, "ledger") is None


def test_a_redis_outage_lets_readings_expire_instead_of_trusting_them() -> None:
    class Down:
        def pipeline(self, transaction: bool = False) -> None:
            raise ConnectionError("redis is down")

    r = fakeredis.FakeRedis(decode_responses=True)
    assert leases.bootstrap(r, "ledger", "a", ttl=2.0)
    clock = Clock()
    watch = LeaseWatch(r, ["ledger"], clock=clock)
    watch.refresh()
    watch.client = Down()
    assert not watch.refresh() and not watch.ok
    clock.t += 5
    assert watch.check("a", 1, "ledger") == authority.UNCONFIRMED
