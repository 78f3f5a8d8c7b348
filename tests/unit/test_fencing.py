"""Fencing epochs and step idempotency at the key level (fakeredis with Lua; the bump race on a real redis-server)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import fakeredis
import pytest

from continuity.failover import records, steps
from continuity.failover.context import FailoverContext
from continuity.services.layout import service_dir
from continuity.state import epochs, keys


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))
    monkeypatch.setenv("CONTINUITY_PULSE_FILE", str(tmp_path / "pulse_history.jsonl"))
    return tmp_path


def test_bump_moves_exactly_one_epoch_and_refuses_a_stale_expectation(client) -> None:
    assert epochs.current_epoch(client, "ledger") == 0
    assert epochs.bump_epoch(client, "ledger", 0) == 1
    with pytest.raises(epochs.StaleEpoch) as err:
        epochs.bump_epoch(client, "ledger", 0)
    assert err.value.current == 1
    assert epochs.current_epoch(client, "ledger") == 1


def test_bump_with_marker_is_idempotent_on_redelivery(client) -> None:
    m = keys.step_done("ledger", 1, "fence")
    assert epochs.bump_epoch(client, "ledger", 0, marker=m) == 1
    # the same fence delivered again: no second bump, same answer
    assert epochs.bump_epoch(client, "ledger", 0, marker=m) == 1
    assert epochs.current_epoch(client, "ledger") == 1


def test_bump_refuses_while_another_node_holds_the_lease(client) -> None:
    client.set(keys.lease("ledger"), json.dumps({"node": "core-a", "epoch": 0}), px=5000)
    with pytest.raises(epochs.LeaseHeld):
        epochs.bump_epoch(client, "ledger", 0, candidate="core-b")
    assert epochs.current_epoch(client, "ledger") == 0
    assert epochs.bump_epoch(client, "ledger", 0, candidate="core-a") == 1  # its own lease is no obstacle
    client.delete(keys.lease("ledger"))
    assert epochs.bump_epoch(client, "ledger", 1, candidate="core-b") == 2


def test_racing_bumps_have_one_winner(client) -> None:
    wins, losses = [], []

    def attempt() -> None:
        try:
            wins.append(epochs.bump_epoch(client, "ledger", 0))
        except epochs.StaleEpoch:
            losses.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == [1] and len(losses) == 7


def test_writes_with_an_older_epoch_are_rejected(client) -> None:
    epochs.bump_epoch(client, "ledger", 0)
    epochs.check_epoch(client, "ledger", 1)
    epochs.bump_epoch(client, "ledger", 1)
    with pytest.raises(epochs.StaleEpoch, match="epoch 1 is stale"):
        epochs.check_epoch(client, "ledger", 1)
    assert epochs.is_current(client, "ledger", 2)
    assert not epochs.is_current(client, "ledger", 3)


def _ctx(rid: str, epoch: int = 1) -> FailoverContext:
    return FailoverContext.from_dict({"record_id": rid, "service": "ledger", "candidate": "core-b",
                                      "old_primary": "core-a", "expected_epoch": epoch - 1, "epoch": epoch,
                                      "attempt": 0})


def test_run_step_does_the_effect_once_per_epoch(client, state) -> None:
    rid = records.open_record(client, {"service": "ledger", "old_primary": "core-a", "candidate": "core-b"},
                              {"detected_at": 10.0, "last_seen": {"core-a": 7.5}}, "detector", 10.0)
    calls = []
    for _ in range(3):
        steps.run_step(client, _ctx(rid), "prepare", "core-b", lambda: calls.append(1) or {"n": len(calls)})
    assert calls == [1]
    rec = records.get_record(client, rid)
    (prep,) = rec["steps"]
    assert prep["ok"] and prep["redeliveries"] == 2 and prep["duration"] is not None
    assert rec["detection"] == pytest.approx(2.5)
    # a new epoch is a new effect
    steps.run_step(client, _ctx(rid, epoch=2), "prepare", "core-b", lambda: calls.append(1) or {})
    assert calls == [1, 1]


def test_failed_step_is_recorded_and_not_marked_done(client, state) -> None:
    rid = records.open_record(client, {"service": "ledger"}, {}, "detector", 1.0)

    def boom() -> dict:
        raise OSError("disk full")

    with pytest.raises(steps.StepFailed, match="disk full"):
        steps.run_step(client, _ctx(rid), "prepare", "core-b", boom)
    assert client.get(steps.marker(_ctx(rid), "prepare")) is None
    # a duplicate delivery of the failed step does not try again: the failure was already acted on
    with pytest.raises(steps.AlreadyHandled):
        steps.run_step(client, _ctx(rid), "prepare", "core-b", boom)
    (prep,) = records.get_record(client, rid)["steps"]
    assert prep["ok"] is False and "disk full" in prep["error"]


def test_route_never_moves_back_to_an_older_epoch(client, state) -> None:
    from continuity.blueprint import load_blueprint

    bp = load_blueprint(Path(__file__).resolve().parents[2] / "ops" / "blueprint.yml")
    sub = client.pubsub()
    sub.subscribe(keys.routes_channel())
    assert steps.publish_route(client, bp, "ledger", "core-b", 5, 100.0)["url"] == "http://127.0.0.1:27200"
    assert steps.publish_route(client, bp, "ledger", "core-a", 4, 101.0) is None
    assert json.loads(client.get(keys.route("ledger")))["node"] == "core-b"
    doc = steps.read_routes_file()
    assert doc["services"]["ledger"]["epoch"] == 5 and doc["services"]["ledger"]["node"] == "core-b"
    msgs = [m for m in iter(lambda: sub.get_message(timeout=0.1), None) if m["type"] == "message"]
    assert [json.loads(m["data"])["epoch"] for m in msgs] == [5]


def test_prepare_leaves_the_old_primarys_files_where_they_are(client, state) -> None:
    """Nodes own their disks: even on one host, the old primary's directory is not a source."""
    from continuity.blueprint import load_blueprint

    bp = load_blueprint(Path(__file__).resolve().parents[2] / "ops" / "blueprint.yml")
    src = service_dir("core-a", "ledger")
    src.mkdir(parents=True)
    (src / "ledger.jsonl").write_text('{"seq": 1}\n{"seq": 2}\n')
    ctx = _ctx("r1")
    out = steps.prepare(client, bp, ctx)
    dst = service_dir("core-b", "ledger")
    assert out["source"] == "replica" and out["starts_from"]["records"] == 0
    assert not (dst / "ledger.jsonl").exists() or (dst / "ledger.jsonl").read_text() == ""


def test_finish_closes_a_record_once(client, state) -> None:
    rid = records.open_record(client, {"service": "ledger"}, {}, "ops@host", 1.0)
    assert records.finish(client, rid, "succeeded", 2.0)
    assert not records.finish(client, rid, "failed", 3.0)
    rec = records.get_record(client, rid)
    assert rec["outcome"] == "succeeded" and rec["who"] == "ops@host"
    assert client.ttl(keys.failover_record(rid)) == -1 and client.ttl(keys.failover_history()) == -1
    assert [r["id"] for r in records.history(client)] == [rid]


def test_concurrent_duplicates_of_a_step_run_the_effect_once(client, state) -> None:
    import time

    rid = records.open_record(client, {"service": "ledger"}, {}, "detector", 1.0)
    calls, results = [], []

    def effect() -> dict:
        calls.append(1)
        time.sleep(0.3)  # the effect is in progress while the duplicate arrives
        return {"started": "once"}

    threads = [threading.Thread(target=lambda: results.append(steps.run_step(client, _ctx(rid), "promote",
                                                                             "core-b", effect)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]
    assert len(results) == 3 and all(r["started"] == "once" for r in results)


def test_no_step_runs_after_the_failover_was_superseded(client, state) -> None:
    """Superseded is terminal for its (service, epoch): a step still queued, redelivered or resent by the watchdog
    after the close must not fence, promote or repoint anything (today's code ran the whole rest of the chain)."""
    rid = records.open_record(client, {"service": "ledger", "old_primary": "core-a", "candidate": "core-b"}, {},
                              "detector", 1.0)
    steps.run_step(client, _ctx(rid), "fence", "core-b", lambda: {"epoch": 1})
    assert records.finish(client, rid, "superseded", 2.0, {"reason": "core-a keeps renewing", "step": "fence"})
    calls = []
    for step in ("prepare", "promote", "repoint", "verify", "record"):
        with pytest.raises(steps.RecordClosed):
            steps.run_step(client, _ctx(rid), step, "core-b", lambda: calls.append(1) or {})
    assert calls == []
    assert [s["step"] for s in records.get_record(client, rid)["steps"]] == ["fence"]


def test_an_epoch_write_the_replicas_did_not_confirm_makes_fence_and_promote_wait(client, state,
                                                                                   monkeypatch) -> None:
    """Unconfirmed is "not yet" (the step is retried), not a failure that escalates or skips a candidate; and
    promote confirms the epoch itself before it takes the lease, since a redelivered fence that finds its
    marker skips the bump and its wait."""
    from continuity.blueprint import load_blueprint
    from continuity.state import durability, leases

    bp = load_blueprint(Path(__file__).resolve().parents[2] / "ops" / "blueprint.yml")
    acked = {"n": 0}

    def run_with_wait(c, queue):
        pipe = c.pipeline(transaction=False)  # fakeredis has no WAIT: the replica's answer is acked["n"]
        queue(pipe)
        return pipe.execute(), durability.Confirmation(1, acked["n"], 10)

    monkeypatch.setattr(epochs, "run_with_wait", run_with_wait)
    started = []
    monkeypatch.setattr(steps.hooks, "run_service_hook", lambda *a, **k: started.append(a) or None)
    client.set(keys.epoch("ledger"), 1)
    ctx = FailoverContext.from_dict({"record_id": "r", "service": "ledger", "candidate": "core-b",
                                     "old_primary": "core-a", "expected_epoch": 1, "epoch": 2, "attempt": 0,
                                     "not_before": 0}, bp)
    with pytest.raises(steps.NotYet):
        steps.fence(client, bp, ctx, now=100.0)
    assert client.get(keys.epoch("ledger")) == "2", "bumped on the master, not yet confirmed"
    # the fence step's redelivery would find its marker and skip: promote must not trust the epoch unconfirmed
    for _ in range(2):
        with pytest.raises(steps.NotYet):
            steps.promote(client, bp, ctx)
    assert started == [] and leases.read(client, "ledger") is None, "no lease, no start on an unconfirmed epoch"
    acked["n"] = 1
    assert steps.fence(client, bp, ctx, now=100.0) == {"epoch": 2}, "the retry confirms, it does not bump again"
    steps.promote(client, bp, ctx)
    assert len(started) == 1 and started[0][3] == "start"
    assert leases.read(client, "ledger").epoch == 2
    client.set(keys.epoch("ledger"), 1)  # a Redis failover lost the bump: the chain is superseded, not run at 2
    with pytest.raises(steps.Superseded):
        steps.promote(client, bp, ctx)


def test_racing_bumps_on_a_real_redis_server_have_one_winner_each_round(redis_url: str) -> None:
    """The bump's check-and-increment is one script on the server. fakeredis serialises every command, so
    only a real redis-server, with a connection per racer, can show a non-atomic bump letting two win."""
    import redis

    racers, rounds = 6, 40
    clients = [redis.Redis.from_url(redis_url, decode_responses=True) for _ in range(racers)]
    barrier = threading.Barrier(racers)
    wins: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def race(client: redis.Redis) -> None:
        try:
            for r in range(rounds):
                barrier.wait(timeout=30)
                try:
                    wins.append((r, epochs.bump_epoch(client, "ledger", r)))
                except epochs.StaleEpoch:
                    pass
                barrier.wait(timeout=30)  # everyone has tried round r before anyone tries r + 1
        except BaseException as exc:  # noqa: BLE001 - reported below, never swallowed
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    assert not errors, errors
    assert sorted(wins) == [(r, r + 1) for r in range(rounds)], "exactly one racer moves each epoch"
    assert epochs.current_epoch(redis.Redis.from_url(redis_url), "ledger") == rounds
