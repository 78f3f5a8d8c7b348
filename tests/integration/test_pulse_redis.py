"""Pulse events against a real redis-server: stream delivery, spooling through an outage, exactly-once replay."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from continuity import pulse as pulse_mod
from continuity.pulse import Pulse, read_events, stream_events, verify_file
from continuity.redisd import RedisServer, connect, free_port
from continuity.state import keys, pulse_stream
from tests.helpers import Proc, continuity_cmd, run_cli, wait_for


@pytest.fixture
def hist(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pulse_history.jsonl"


@pytest.fixture
def own_client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = connect(own_redis.url, socket_timeout=2, socket_connect_timeout=1)
    yield client
    client.close()


def stream_ids(client: redis.Redis) -> list[str]:
    return [ev["id"] for _sid, ev in stream_events(client, count=10_000)]


def spool_of(hist: Path) -> Path:
    return hist.with_name(hist.name + ".spool")


def spool_during_outage(server: RedisServer, client: redis.Redis, hist: Path,
                        n: int) -> tuple[Pulse, list[dict]]:
    """Emit ``n`` events while Redis is down, then bring it back: they are all in the spool."""
    p = Pulse(client=client, path=hist)
    server.stop()
    spooled = [p.emit("test.spooled", data={"i": i}) for i in range(n)]
    server.start()
    wait_for(lambda: client.ping(), timeout=20, what="redis back")
    return p, spooled


def test_events_reach_the_stream_and_the_file(redis_url: str, hist: Path) -> None:
    client = connect(redis_url)
    p = Pulse(client=client, path=hist, node="core-a")
    sent = [p.emit("test.tick", service="ledger", data={"i": i}) for i in range(3)]
    got = [ev for _sid, ev in stream_events(client)]
    assert got == sent  # same ids, hashes and chain fields as the file
    assert list(read_events(hist)) == sent
    assert not spool_of(hist).exists()


def test_outage_events_are_spooled_then_delivered_once_in_order(own_redis: RedisServer, own_client: redis.Redis,
                                                                 hist: Path) -> None:
    p = Pulse(client=own_client, path=hist, node="core-a")
    now = [1000.0]
    p.clock = lambda: now[0]
    before = [p.emit("test.before", data={"i": i}) for i in range(2)]
    own_redis.stop()
    during = [p.emit("test.during", data={"i": i}) for i in range(3)]
    assert len(spool_of(hist).read_text().splitlines()) == 3
    assert verify_file(hist).count == 5  # the file never misses an event

    own_redis.start()
    wait_for(lambda: own_client.ping(), timeout=20, what="redis back")
    backoff = p.emit("test.backoff")  # still inside the retry pause: spooled behind the others
    assert stream_ids(own_client) == [e["id"] for e in before]
    now[0] += p.retry_after
    after = p.emit("test.after")  # the next attempt flushes the spool first, so order is kept
    expected = [e["id"] for e in before + during + [backoff, after]]
    assert stream_ids(own_client) == expected
    assert not spool_of(hist).exists()
    assert p.flush_spool() == 0
    assert stream_ids(own_client) == expected


def test_after_a_failure_redis_is_not_retried_on_every_event(own_redis: RedisServer, own_client: redis.Redis,
                                                             hist: Path) -> None:
    """A black-holed Redis costs a connect timeout per attempt: one attempt per pause, not one per event."""
    p = Pulse(client=own_client, path=hist)
    now = [50.0]
    p.clock = lambda: now[0]
    real, calls = p._deliver, []

    def counting(**kwargs: object) -> object:
        calls.append(1)
        return real(**kwargs)

    p._deliver = counting
    own_redis.stop()
    for _ in range(5):
        p.emit("test.down")
    assert len(calls) == 1
    now[0] += p.retry_after
    p.emit("test.down")
    assert len(calls) == 2
    assert len(spool_of(hist).read_text().splitlines()) == 6


def test_flush_after_a_crash_mid_flush_delivers_nothing_twice(own_redis: RedisServer, own_client: redis.Redis,
                                                               hist: Path) -> None:
    """A flusher killed after delivering some events but before rewriting the spool: all are replayed, once."""
    p, spooled = spool_during_outage(own_redis, own_client, hist, 4)
    for ev in spooled[:2]:  # what the killed flusher got through; its spool file is untouched
        p._deliver_one(ev["id"], json.dumps(ev, sort_keys=True))
    assert len(spool_of(hist).read_text().splitlines()) == 4

    assert p.flush_spool() == 2
    assert p.flush_spool() == 0
    assert stream_ids(own_client) == [e["id"] for e in spooled]


def test_flush_interrupted_by_a_lost_reply_is_retried_without_duplicates(own_redis: RedisServer,
                                                                          own_client: redis.Redis,
                                                                          hist: Path) -> None:
    """Redis applied a delivery but the reply never arrived: the event stays spooled and the retry is a no-op."""
    p, spooled = spool_during_outage(own_redis, own_client, hist, 4)

    real = p._deliver
    calls = {"n": 0}

    def flaky(**kwargs: object) -> object:
        calls["n"] += 1
        result = real(**kwargs)
        if calls["n"] == 2:
            raise redis.ConnectionError("connection reset after the reply was sent")
        return result

    p._deliver = flaky
    with pytest.raises(redis.ConnectionError):
        p.flush_spool()
    remaining = [json.loads(ln)["id"] for ln in spool_of(hist).read_text().splitlines()]
    assert remaining == [e["id"] for e in spooled[1:]]  # the first is done; the lost reply's event is kept

    p._deliver = real
    assert p.flush_spool() == 2  # events 3 and 4; event 2 was already in the stream
    assert stream_ids(own_client) == [e["id"] for e in spooled]
    assert not spool_of(hist).exists()


def test_a_redis_restart_keeps_the_stream(own_redis: RedisServer, own_client: redis.Redis, hist: Path) -> None:
    """AOF: history in the stream outlives a broker crash (kill -9 after the fsync window)."""
    p = Pulse(client=own_client, path=hist)
    sent = [p.emit("test.durable", data={"i": i}) for i in range(3)]
    own_client.execute_command("BGREWRITEAOF")
    wait_for(lambda: own_client.info("persistence")["aof_rewrite_in_progress"] == 0, timeout=20,
             what="AOF rewrite")
    own_redis.kill()
    own_redis.start()
    wait_for(lambda: own_client.ping(), timeout=20, what="redis back")
    assert stream_ids(own_client) == [e["id"] for e in sent]


def test_module_level_emit_uses_the_configured_redis(redis_url: str, hist: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_REDIS_URL", redis_url)
    monkeypatch.setenv("CONTINUITY_PULSE_FILE", str(hist))
    monkeypatch.setenv("CONTINUITY_NODE", "core-b")
    monkeypatch.setattr(pulse_mod, "_default", None)
    ev = pulse_mod.emit("test.default", data={"x": 1})
    assert ev["node"] == "core-b"
    client = connect(redis_url)
    assert [e["id"] for _s, e in stream_events(client)] == [ev["id"]]
    assert [e["id"] for e in read_events(hist)] == [ev["id"]]


def _cli_env(redis_url: str, pulse_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CONTINUITY_REDIS_URL": redis_url, "CONTINUITY_PULSE_FILE": str(pulse_file),
                "CONTINUITY_STATE": str(pulse_file.parent)})
    return env


def test_tail_json_reads_the_stream(redis_url: str, rds: redis.Redis, hist: Path, tmp_path: Path) -> None:
    p = Pulse(client=connect(redis_url), path=hist, node="core-a")
    rare = p.emit("failover.promoted", service="ledger", epoch=3)
    # many later events of another kind, written straight to the stream: the filter must look past them
    for i in range(450):
        ev = {"id": f"filler-{i}", "ts": 1.0, "kind": "continuity_layer.test.filler", "data": {"i": i}}
        rds.xadd(keys.pulse_stream(), {"id": ev["id"], "event": json.dumps(ev)})
    last = p.emit("test.last")
    other_file = tmp_path / "elsewhere" / "pulse_history.jsonl"  # proves the events come from Redis
    env = _cli_env(redis_url, other_file)

    res = run_cli("pulse", "tail", "--json", "-n", "3", env=env)
    assert res.returncode == 0, res.stderr
    assert [e["id"] for e in json.loads(res.stdout)] == ["filler-448", "filler-449", last["id"]]

    res = run_cli("pulse", "tail", "--json", "--kind", "failover", env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [rare]

    res = run_cli("pulse", "tail", "-n", "1", env=env)
    assert res.stdout.count("\n") == 1 and "test.last" in res.stdout and "node=core-a" in res.stdout


def test_tail_falls_back_to_the_file_when_redis_is_unreachable(hist: Path) -> None:
    ev = Pulse(path=hist).emit("test.local")
    env = _cli_env(f"redis://127.0.0.1:{free_port()}/0", hist)
    res = run_cli("pulse", "tail", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert [e["id"] for e in json.loads(res.stdout)] == [ev["id"]]
    assert "Redis unreachable" in res.stderr and str(hist) in res.stderr


def test_tail_follow_on_the_stream(redis_url: str, hist: Path, tmp_path: Path) -> None:
    p = Pulse(client=connect(redis_url), path=hist)
    first = p.emit("test.first")
    old_drill = p.emit("drill.old")
    proc = Proc(continuity_cmd("pulse", "tail", "--follow", "--json", "-n", "0", "--kind", "drill"),
                _cli_env(redis_url, hist), tmp_path / "follow.log")
    try:
        def printed() -> list[str]:
            return [json.loads(ln)["id"] for ln in proc.output().splitlines() if ln.startswith("{")]

        def started() -> bool:  # emit until the follower is listening; -n 0 shows nothing from before
            p.emit("drill.started")
            return len(printed()) >= 1

        wait_for(started, timeout=30, interval=0.2, what="first followed event")
        noise = p.emit("test.noise")
        done = p.emit("drill.finished")
        wait_for(lambda: done["id"] in printed(), timeout=30, what="the last followed event")
        assert first["id"] not in printed() and noise["id"] not in printed() and old_drill["id"] not in printed()
        assert printed()[-1] == done["id"]
        proc.popen.send_signal(signal.SIGINT)
        assert proc.popen.wait(20) == 0
    finally:
        proc.stop()


def test_unreadable_spool_lines_do_not_block_the_rest(redis_url: str, hist: Path) -> None:
    client = connect(redis_url)
    p = Pulse(client=client, path=hist)
    hist.parent.mkdir(parents=True, exist_ok=True)
    good = {"id": "good-1", "kind": "continuity_layer.test.ok"}
    spool_of(hist).write_bytes(b'{"id":"torn\n\xff\xfe\n{}\n' + json.dumps(good).encode() + b"\n")
    assert p.flush_spool() == 1
    assert stream_ids(client) == ["good-1"]
    assert not spool_of(hist).exists()


def test_the_dedup_record_is_bounded(redis_url: str, rds: redis.Redis, hist: Path) -> None:
    p = Pulse(client=connect(redis_url), path=hist)
    p.seen_max = 5
    sent = [p.emit("test.many", data={"i": i}) for i in range(12)]
    assert rds.zcard(keys.pulse_seen()) == 5
    assert stream_ids(rds) == [e["id"] for e in sent]
    recent = sent[-1]
    assert p._deliver_one(recent["id"], json.dumps(recent)) == 0  # still remembered: not delivered again
    assert len(stream_ids(rds)) == 12


def test_delivered_events_are_counted_once_by_kind_and_service(redis_url: str, hist: Path) -> None:
    """The counters behind the metrics' ``_total`` series: one per event added, none for a redelivery, kept
    when the stream itself is trimmed."""
    client = connect(redis_url)
    p = Pulse(client=client, path=hist)
    first = p.emit("failover.service_restarted", service="ledger", data={})
    p.emit("failover.service_restarted", service="ledger", data={})
    p.emit("failover.service_restarted", service="keystore", data={})
    p.emit("node.ping", data={})
    # the same event delivered again (a spool replayed after its first delivery did reach Redis): not counted
    assert not pulse_stream.deliver(client, first["id"], json.dumps(first), 10, 100)
    client.xtrim(keys.pulse_stream(), maxlen=0)
    assert pulse_stream.counts(client) == {
        ("continuity_layer.failover.service_restarted", "ledger"): 2,
        ("continuity_layer.failover.service_restarted", "keystore"): 1,
        ("continuity_layer.node.ping", None): 1,
    }
    # a payload that is not an event's JSON is stored (readers skip it) but counts nothing
    assert pulse_stream.deliver(client, "raw-1", "not json", 10, 100)
    assert sum(pulse_stream.counts(client).values()) == 4
