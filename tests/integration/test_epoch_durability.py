"""Fencing epochs survive a Redis failover: every epoch write is confirmed by WAIT on the replicas.

A real master and replica (redis-server processes). The replica is paused (SIGSTOP) to stand for one that
is behind: an epoch write then fails as unconfirmed instead of returning an epoch the replica does not have,
and the retry after it caught up returns the same epoch (the write is idempotent, never bumped twice).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from continuity.redisd import RedisServer
from continuity.state import epochs, keys, leases
from continuity.state.durability import Unconfirmed, replicas_to_confirm
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RedisServer, RedisServer]]:
    monkeypatch.setenv("CONTINUITY_EPOCH_WAIT_MS", "300")
    monkeypatch.delenv("CONTINUITY_EPOCH_REPLICAS", raising=False)
    master = RedisServer(tmp_path / "m").start()
    replica = RedisServer(tmp_path / "r", extra_args=("--replicaof", "127.0.0.1", str(master.port))).start()
    rc = redis.Redis(port=replica.port, decode_responses=True)
    wait_for(lambda: rc.info("replication").get("master_link_status") == "up", timeout=20, what="replica in sync")
    rc.close()
    yield master, replica
    if replica.proc is not None and replica.proc.poll() is None:
        os.kill(replica.proc.pid, signal.SIGCONT)
    replica.kill()
    master.kill()


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, decode_responses=True, socket_timeout=2)


def test_a_confirmed_bump_is_on_the_replica_and_a_stalled_replica_fails_it(pair) -> None:
    master, replica = pair
    m, r = _client(master), _client(replica)
    assert replicas_to_confirm(m) == 1
    assert epochs.bump_epoch(m, "ledger", 0, marker=keys.step_done("ledger", 1, "fence")) == 1
    assert r.get(keys.epoch("ledger")) == "1", "returned only once the replica had it"

    os.kill(replica.proc.pid, signal.SIGSTOP)  # a replica that is behind
    marker = keys.step_done("ledger", 2, "fence")
    with pytest.raises(Unconfirmed):
        epochs.bump_epoch(m, "ledger", 1, marker=marker)
    assert m.get(keys.epoch("ledger")) == "2", "the write stays on the master (the step is retried)"
    with pytest.raises(Unconfirmed):
        epochs.bump_epoch(m, "ledger", 1, marker=marker)  # a retry while still stalled: still not confirmed
    os.kill(replica.proc.pid, signal.SIGCONT)
    assert epochs.bump_epoch(m, "ledger", 1, marker=marker) == 2, "the retry confirms, it does not bump again"
    assert m.get(keys.epoch("ledger")) == "2" and r.get(keys.epoch("ledger")) == "2"


def test_the_first_epoch_and_an_epoch_about_to_be_used_are_confirmed_too(pair) -> None:
    master, replica = pair
    m, r = _client(master), _client(replica)
    assert leases.bootstrap(m, "ledger", "core-a", ttl=30)
    assert r.get(keys.epoch("ledger")) == "1" and r.exists(keys.lease("ledger"))
    os.kill(replica.proc.pid, signal.SIGSTOP)
    m.set(keys.epoch("ledger"), 2)  # bumped while the replica stalls (what a skipped, redelivered fence leaves)
    with pytest.raises(Unconfirmed):
        epochs.confirm_epoch(m, "ledger", 2)
    with pytest.raises(Unconfirmed):
        leases.bootstrap(m, "keystore", "core-b", ttl=30)
    os.kill(replica.proc.pid, signal.SIGCONT)
    epochs.confirm_epoch(m, "ledger", 2)
    assert r.get(keys.epoch("ledger")) == "2"
    assert leases.bootstrap(m, "keystore", "core-b", ttl=30, retry=True), "epoch 1 still ours: confirmed now"
    with pytest.raises(epochs.StaleEpoch):
        epochs.confirm_epoch(m, "ledger", 3)


def test_the_replica_promoted_after_a_master_loss_never_has_a_lower_epoch_than_one_handed_out(pair) -> None:
    """The failure the issue saw: an epoch bumped on the master, lost with it, and issued again later."""
    master, replica = pair
    m, r = _client(master), _client(replica)
    handed_out = [epochs.bump_epoch(m, "ledger", 0)]
    os.kill(replica.proc.pid, signal.SIGSTOP)
    m.set("filler", "x" * 1_000_000)  # the replica falls behind
    with pytest.raises(Unconfirmed):
        handed_out.append(epochs.bump_epoch(m, "ledger", 1))
    master.kill()
    os.kill(replica.proc.pid, signal.SIGCONT)
    r.replicaof("NO", "ONE")  # what a Sentinel does
    promoted = int(r.get(keys.epoch("ledger")) or 0)
    assert promoted >= max(handed_out), (promoted, handed_out)
    new = epochs.bump_epoch(r, "ledger", promoted)
    assert new not in handed_out, "an epoch is never issued twice"


def test_a_single_redis_does_not_wait(own_redis) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert replicas_to_confirm(client) == 0
    assert epochs.bump_epoch(client, "ledger", 0) == 1
