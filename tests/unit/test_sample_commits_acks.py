"""The sample service raises the committed position to each write it acknowledges (real redis-server).

A failover measures its loss against the committed position. Raised only by the primary's replicator every
0.5 s, it lagged what clients were told: a node whose replicator was frozen (SIGSTOP of its worker) while its
service kept acknowledging lost writes that the failover then reported as 0 lost."""

from __future__ import annotations

from pathlib import Path

import redis

from continuity.replication.ledger import LedgerLog
from continuity.replication.local import GateSpec, SyncGate
from continuity.sample.ledger_service import LEDGER, App
from continuity.state import epochs, keys
from continuity.state.replication import read_committed


def app_with(url: str, directory: Path, ledgers: tuple[str, ...], service: str = "ledger") -> App:
    app = App(service, "core-a", 0, 1, directory, redis_url=url)
    app.gate = SyncGate(service, "core-a", LEDGER, loader=lambda s: GateSpec("async", 0.5, "refuse", ledgers))
    return app


def test_every_acknowledged_write_is_committed_before_the_answer(own_redis, tmp_path: Path) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert epochs.bump_epoch(client, "ledger", 0) == 1
    app = app_with(own_redis.url, tmp_path / "data", (LEDGER,))
    for seq in (5, 9, 12):
        assert app.write(seq, {"v": seq})[0] == 200
        c = read_committed(client, ["ledger"])["ledger"][LEDGER]
        assert c.last_seq == seq  # no replicator runs here: the acknowledgement itself committed it
    log = LedgerLog(tmp_path / "data" / LEDGER).open()
    assert (c.count, c.offset, c.epoch, c.node) == (log.count, log.end_offset, 1, "core-a")
    assert c.count == 3
    assert app.write(9, {"v": 9})[1]["duplicate"]  # a retry changes nothing
    assert read_committed(client, ["ledger"])["ledger"][LEDGER].count == 3


def test_a_service_without_a_declared_ledger_commits_nothing(own_redis, tmp_path: Path) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert epochs.bump_epoch(client, "notifier", 0) == 1
    app = app_with(own_redis.url, tmp_path / "data", (), service="notifier")
    assert app.write(1, {})[0] == 200
    assert read_committed(client, ["notifier"]) == {}


def test_a_write_whose_acknowledgement_cannot_be_committed_is_kept_but_not_promised(own_redis,
                                                                                   tmp_path: Path) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert epochs.bump_epoch(client, "ledger", 0) == 1
    client.set(keys.replication_committed("ledger"), "not a hash")  # every advance now fails (WRONGTYPE)
    app = app_with(own_redis.url, tmp_path / "data", (LEDGER,))
    status, body = app.write(1, {})
    assert status == 503 and body["stored"] and "cannot record the acknowledgement" in body["error"]
