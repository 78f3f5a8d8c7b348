"""Role leases against a real redis-server: acquire, renew, release, expiry, fencing epochs, races."""

from __future__ import annotations

import json
import threading

from continuity.state import keys, leases
from tests.helpers import wait_for


def test_acquire_read_renew_release(rds) -> None:
    assert leases.read(rds, "ledger") is None
    assert leases.acquire(rds, "ledger", "core-a", 1, ttl=5)
    lease = leases.read(rds, "ledger")
    assert lease is not None and (lease.node, lease.epoch) == ("core-a", 1) and 4 < lease.ttl <= 5
    # stored as JSON so anyone can GET it (status, operators)
    assert json.loads(rds.get(keys.lease("ledger")))["node"] == "core-a"
    rds.pexpire(keys.lease("ledger"), 1000)
    assert leases.renew(rds, "ledger", "core-a", 1, ttl=5)
    assert leases.read(rds, "ledger").ttl > 4
    assert not leases.renew(rds, "ledger", "core-b", 1, ttl=5), "only the holder renews"
    assert not leases.renew(rds, "ledger", "core-a", 2, ttl=5), "only at the epoch it holds"
    assert not leases.release(rds, "ledger", "core-b", 1)
    assert leases.release(rds, "ledger", "core-a", 1)
    assert leases.read(rds, "ledger") is None
    assert not leases.renew(rds, "ledger", "core-a", 1, ttl=5), "a released lease cannot be renewed back"


def test_held_lease_refuses_another_node_until_it_expires(rds) -> None:
    assert leases.acquire(rds, "ledger", "core-a", 1, ttl=0.3)
    assert leases.acquire_ex(rds, "ledger", "core-b", 2, ttl=5) == (False, "held")
    wait_for(lambda: leases.read(rds, "ledger") is None, timeout=5, what="lease expiry")
    assert leases.acquire(rds, "ledger", "core-b", 2, ttl=5)
    assert leases.read(rds, "ledger").node == "core-b"


def test_stale_epoch_is_refused(rds) -> None:
    rds.set(keys.epoch("ledger"), 4)
    assert leases.acquire_ex(rds, "ledger", "core-a", 3, ttl=5) == (False, "stale-epoch")
    assert leases.acquire(rds, "ledger", "core-a", 4, ttl=5)
    assert leases.acquire_ex(rds, "ledger", "core-a", 2, ttl=5) == (False, "stale-epoch")
    assert leases.acquire(rds, "ledger", "core-a", 5, ttl=5), "the holder may move to a newer epoch"
    assert leases.read(rds, "ledger").epoch == 5


def test_bootstrap_only_for_a_never_placed_service(rds) -> None:
    assert leases.bootstrap(rds, "ledger", "core-a", ttl=5)
    assert rds.get(keys.epoch("ledger")) == "1"
    assert leases.read(rds, "ledger").epoch == 1
    leases.release(rds, "ledger", "core-a", 1)
    assert not leases.bootstrap(rds, "ledger", "core-a", ttl=5), "an epoch exists: roles move only by failover"


def test_read_many_and_unreadable_values(rds) -> None:
    leases.acquire(rds, "a", "n1", 1, ttl=5)
    rds.set(keys.lease("b"), "not json")
    got = leases.read_many(rds, ["a", "b", "c"])
    assert got["a"].node == "n1" and got["b"] is None and got["c"] is None


def test_racing_acquirers_exactly_one_wins(redis_url) -> None:
    import redis

    winners: list[str] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        barrier.wait()
        if leases.acquire(client, "ledger", f"node-{i}", 1, ttl=5):
            winners.append(f"node-{i}")
        client.close()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert winners[0] == leases.read(redis.Redis.from_url(redis_url, decode_responses=True), "ledger").node


def test_release_of_a_lapsed_lease_deletes_its_holder_record(rds) -> None:
    """A failed promotion is undone after its lease lapsed (a slow failing start): the holder record still names
    the candidate at the current epoch, which its agent would take back as an orphan. Release clears it; a
    record naming another node or epoch is left alone."""
    rds.set(keys.epoch("ledger"), 3)
    assert leases.acquire(rds, "ledger", "core-b", 3, ttl=0.2)
    wait_for(lambda: leases.read(rds, "ledger") is None, timeout=5, what="lease expiry")
    assert rds.exists(keys.lease_holder("ledger")), "the record outlives the lease (what makes an orphan)"
    assert not leases.release(rds, "ledger", "core-c", 3)
    assert not leases.release(rds, "ledger", "core-b", 2)
    assert rds.exists(keys.lease_holder("ledger"))
    assert leases.release(rds, "ledger", "core-b", 3)
    assert not rds.exists(keys.lease_holder("ledger"))
