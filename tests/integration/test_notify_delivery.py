"""Webhook notifications against a real redis-server and a real HTTP receiver on a free port.

A failover and a failed drill each deliver exactly one notification; while the receiver is down they are retried
(with backoff, on an injected clock) and delivered once it is back, never twice, also when two loops (two control
workers) run side by side. The watched conditions (a stale backup, an overdue pause, a lagging standby) are told
once when they begin and once when they end.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from continuity.blueprint import load_blueprint
from continuity.events import DRILL_FINISHED, NODE_PING
from continuity.failover import records as failover_records
from continuity.metrics.compute import PauseCheck
from continuity.notify.conditions import Watch
from continuity.notify.config import Notifications, load_notifications
from continuity.notify.deliver import Notifier
from continuity.notify.watch import read_watch
from continuity.pulse import Pulse, read_events
from continuity.redisd import connect
from continuity.state import backups, controls, keys
from continuity.state import notifications as store
from continuity.state import replication as state_replication
from continuity.state.replication import StandbyLag
from tests.helpers import project_env, run_cli, wait_for
from tests.metrics_support import Receiver


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("CONTINUITY_REDIS_URL", redis_url)
    return tmp_path


def config(tmp: Path, receiver: Receiver, retry: str = "{initial: 10s, max: 40s, give_up_after: 1h}",
           **extra_hooks: str) -> Notifications:
    hooks = f"  ops:\n    url: {receiver.url()}\n    timeout: 2s\n"
    for name, fmt in extra_hooks.items():
        hooks += f"  {name}:\n    url: {receiver.url('/' + name)}\n    format: {fmt}\n"
    path = tmp / "notifications.yml"
    path.write_text(f"version: 1\nretry: {retry}\nwebhooks:\n{hooks}")
    return load_notifications(path)


def notifier(redis_url: str, cfg: Notifications, clock: Any = time.time, pulse: Any = None) -> Notifier:
    return Notifier(connect(redis_url), lambda: cfg, lambda: "test-fleet", clock=clock, pulse=pulse)


def a_failover(client: Any, service: str = "ledger") -> str:
    """A failover record opened and closed as succeeded by the records module: its failover.completed event."""
    now = time.time()
    rid = failover_records.open_record(client, {"service": service, "kind": "failover", "old_primary": "core-a",
                                                "candidate": "core-b"}, {}, "detector", now)
    failover_records.finish(client, rid, "succeeded", now + 1, service=service, epoch=2)
    return rid


def a_drill(pulse: Pulse, status: str, drill: str = "d1") -> None:
    pulse.emit(DRILL_FINISHED, data={"drill": drill, "scenario": "service-crash", "status": status, "mttr": 9.0,
                                     "detection": None, "data_lost": 0, "achieved_rpo": None, "failovers": 0})


def one_failover_owed(redis_url: str, env: Path, receiver: Receiver, clock: Clock) -> tuple[Any, Notifier]:
    """A loop on ``clock`` that owes the receiver one failover notification, not yet attempted."""
    client = connect(redis_url)
    n = notifier(redis_url, config(env, receiver), clock=clock)
    n.pull()
    a_failover(client)
    n.pull()
    return client, n


def topics(receiver: Receiver) -> list[str]:
    return [p["body"]["topic"] for p in receiver.posts]


def test_a_failover_and_a_failed_drill_each_deliver_exactly_one_notification(
        redis_url: str, env: Path, receiver: Receiver) -> None:
    receiver.start()
    client = connect(redis_url)
    n = notifier(redis_url, config(env, receiver))
    assert n.pull() == 0  # the first pull only marks where the fleet's notifications start
    pulse = Pulse(client=client, path=env / "state" / "pulse_history.jsonl")
    rid = a_failover(client)
    a_drill(pulse, "failed")
    a_drill(pulse, "passed", "d2")  # a drill that passed tells nobody
    pulse.emit(NODE_PING, data={"target": "core-a", "correct": True})
    assert n.pull() == 2
    assert [o.status for o in n.push()] == ["delivered", "delivered"]
    assert sorted(topics(receiver)) == ["drill.failed", "failover.completed"]
    fo = next(p for p in receiver.posts if p["body"]["topic"] == "failover.completed")
    assert rid in fo["body"]["text"] and fo["body"]["labels"] == {"service": "ledger"}
    assert fo["headers"]["Idempotency-Key"] == fo["body"]["id"]
    # nothing is owed twice: the same events read again, and later rounds, send nothing more
    client.set(keys.notify_cursor(), "0-0")
    assert n.pull() == 0 and n.push() == []
    assert len(receiver.posts) == 2
    assert store.stats(client) == {("ops", "delivered"): 2}


def test_a_receiver_that_is_down_is_retried_with_backoff_and_served_once_back(
        redis_url: str, env: Path, receiver: Receiver) -> None:
    clock = Clock()
    client, n = one_failover_owed(redis_url, env, receiver, clock)
    assert [o.status for o in n.push()] == ["retry"]  # refused: next attempt in 10 s
    for step in (10, 20, 40, 40):  # 10 s doubled, capped at 40 s
        clock.t += step - 1
        assert n.push() == []  # not due yet: no attempt between two backoff steps
        clock.t += 1
        (out,) = n.push()
        assert out.status == "retry" and "Connection refused" in out.detail, out
    (pending,) = store.recent(client)
    assert pending["status"] == "pending" and pending["attempts"] == 5 and pending["next_at"] == clock.t + 40
    receiver.start()
    clock.t += 40
    assert [o.status for o in n.push()] == ["delivered"]
    clock.t += 3600
    assert n.push() == [] and n.pull() == 0
    assert topics(receiver) == ["failover.completed"]
    assert store.stats(client) == {("ops", "delivered"): 1}
    assert store.pending_by_webhook(client) == {}


def test_an_error_answer_is_retried_not_taken_for_delivery(redis_url: str, env: Path, receiver: Receiver) -> None:
    receiver.start()
    receiver.status = 503
    clock = Clock()
    _client, n = one_failover_owed(redis_url, env, receiver, clock)
    assert [(o.status, o.detail) for o in n.push()] == [("retry", "HTTP 503")]
    receiver.status = 204
    clock.t += 10
    assert [o.status for o in n.push()] == ["delivered"]
    assert len(receiver.posts) == 2  # one refused, one accepted: the receiver decided, not us


def test_gives_up_after_the_configured_time_and_says_so(redis_url: str, env: Path, receiver: Receiver) -> None:
    clock = Clock()
    client = connect(redis_url)
    pulse = Pulse(client=client, path=env / "state" / "pulse_history.jsonl")
    n = notifier(redis_url, config(env, receiver), clock=clock, pulse=pulse)
    n.pull()
    a_failover(client)
    n.pull()
    assert [o.status for o in n.push()] == ["retry"]
    clock.t += 3600
    assert [o.status for o in n.push()] == ["given_up"]
    clock.t += 3600
    receiver.start()
    assert n.push() == []
    assert receiver.posts == []
    assert store.stats(client) == {("ops", "given_up"): 1}
    gave_up = [e for e in read_events(env / "state" / "pulse_history.jsonl")
               if e["kind"].endswith("notify.given_up")]
    assert len(gave_up) == 1 and gave_up[0]["data"]["webhook"] == "ops" and gave_up[0]["data"]["attempts"] == 2


def test_each_webhook_gets_its_own_format(redis_url: str, env: Path, receiver: Receiver) -> None:
    receiver.start()
    client = connect(redis_url)
    n = notifier(redis_url, config(env, receiver, chat="slack", am="alertmanager"))
    n.pull()
    a_failover(client)
    n.pull()
    assert len(n.push()) == 3
    by_path = {p["path"]: p["body"] for p in receiver.posts}
    assert by_path["/hook"]["topic"] == "failover.completed"
    assert by_path["/chat"]["text"].startswith(":warning: *ledger failed over")
    assert by_path["/am"]["alerts"][0]["labels"]["alertname"] == "ContinuityFailoverCompleted"
    assert by_path["/am"]["alerts"][0]["labels"]["fleet"] == "test-fleet"


def test_two_loops_share_the_work_without_sending_anything_twice(
        redis_url: str, env: Path, receiver: Receiver) -> None:
    """Two control workers' loops, racing on real threads, while the receiver starts late."""
    client = connect(redis_url)
    cfg = config(env, receiver, retry="{initial: 100ms, max: 200ms, give_up_after: 1h}")
    loops = [notifier(redis_url, cfg) for _ in range(2)]
    loops[0].pull()
    stop = threading.Event()
    threads = [threading.Thread(target=lp.run, args=(stop,), kwargs={"block_ms": 50}, daemon=True) for lp in loops]
    for t in threads:
        t.start()
    try:
        rids = [a_failover(client, service=f"svc{i}") for i in range(12)]
        wait_for(lambda: sum(1 for d in store.recent(client, 100) if d.get("attempts", 0) >= 2) == 12, timeout=30,
                 what="every notification retried while the receiver is down")
        receiver.start()
        wait_for(lambda: store.stats(client).get(("ops", "delivered")) == 12, timeout=30,
                 what="every notification delivered")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    sent = [p["headers"]["Idempotency-Key"] for p in receiver.posts]
    assert len(sent) == len(set(sent)) == 12
    assert {p["body"]["labels"]["service"] for p in receiver.posts} == {f"svc{i}" for i in range(12)}
    assert all(any(r in p["body"]["text"] for r in rids) for p in receiver.posts)


def test_notify_commands_check_test_and_show(redis_url: str, env: Path, receiver: Receiver) -> None:
    """`continuity notify check|test|status`: a test message posted now, its failure one line, a bad file exit 2."""
    config(env, receiver)
    cli_env = project_env(redis_url, env / "state", CONTINUITY_NOTIFICATIONS=str(env / "notifications.yml"))
    checked = json.loads(run_cli("notify", "check", "--json", env=cli_env).stdout)
    assert checked["webhooks"]["ops"]["url"] == receiver.url() and checked["retry"]["initial"] == 10
    assert checked["checks"] == {"every": 30, "snapshot_schedules": 3, "verify_schedules": 3,
                                 "pause_without_expiry": 86400}
    down = run_cli("notify", "test", "ops", env=cli_env)
    assert down.returncode == 1 and "Traceback" not in down.stderr and len(down.stderr.strip().splitlines()) == 1
    receiver.start()
    up = run_cli("notify", "test", "ops", env=cli_env)
    assert up.returncode == 0, up.stderr
    assert [p["body"]["topic"] for p in receiver.posts] == ["test"]
    assert store.stats(connect(redis_url)) == {}  # a test message is not a delivery
    unknown = run_cli("notify", "test", "nope", env=cli_env)
    assert unknown.returncode == 2 and "no webhook 'nope'" in unknown.stderr
    (env / "notifications.yml").write_text("version: 1\nwebhooks:\n  ops: {url: 'mailto:x'}\n")
    bad = run_cli("notify", "check", env=cli_env)
    assert bad.returncode == 2 and f"{env / 'notifications.yml'}:3: webhooks.ops.url:" in bad.stderr
    shown = json.loads(run_cli("notify", "status", "--json", env=cli_env).stdout)
    assert shown == {"webhooks": {}, "recent": [], "open": []}


# --- watched conditions ------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


def watching(redis_url: str, cfg: Notifications, clock: Clock) -> Notifier:
    """A loop that judges the conditions on what a control worker reads: the fleet's real keys, ops/ files."""
    client = connect(redis_url)
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    return Notifier(client, lambda: cfg, lambda: "test-fleet", clock=clock,
                    watch=lambda now: read_watch(client, bp, now))


def lag(client: Any, seconds: float, at: float) -> None:
    """ledger's primary core-a publishes its standby core-b's lag."""
    state_replication.publish_lags(client, [StandbyLag("ledger", "ledger.jsonl", "core-b", "core-a", 1, "catchup",
                                                       "async", 0, 0, 100, 10, seconds, 10, 100, at)])


def test_watched_conditions_are_told_once_when_they_begin_and_once_when_they_end(
        redis_url: str, env: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale backup (snapshot and restore), an overdue pause and a lagging standby, written to a real Redis as the
    fleet writes them, each reach a real receiver once firing and once resolved, in JSON and as Alertmanager's one
    alert; a second control worker judging in the same interval adds nothing."""
    monkeypatch.setenv("CONTINUITY_BACKUP_CONFIG", str(ROOT / "ops" / "backup" / "continuity.yml"))
    receiver.start()
    clock = Clock()
    t0 = clock.t
    client = connect(redis_url)
    cfg = config(env, receiver, am="alertmanager")
    n, other = watching(redis_url, cfg, clock), watching(redis_url, cfg, clock)
    # ledger-live: snapshots every 1m, RPO 2m, a restore drill every 1m (ops/backup/continuity.yml)
    backups.record(client, "ledger-live", {"last_snapshot_time": t0 - 60, "last_verified_time": t0 - 60})
    controls.set_pause(client, "ledger", {"who": "ops", "at": t0, "reason": "upgrade", "until": t0 + 600})
    lag(client, 1.0, t0)
    assert n.check() == ([], []) and n.push() == []
    clock.t += 700  # snapshot 760 s old (RPO 2m), restore 760 s (3 x 1m), pause 100 s past its end
    lag(client, 30.0, clock.t)  # ledger's RPO is 5 s
    fired, none = n.check()
    assert none == [] and sorted(x.topic for x in fired) == ["backup.stale", "backup.stale", "pause.overdue",
                                                               "replication.lag"]
    assert other.check() == ([], [])  # the other worker: this interval was judged
    client.delete(keys.notify_check_at())
    assert other.check() == ([], [])  # even judging again: every episode is open already
    assert [o.status for o in n.push()] == ["delivered"] * 8  # 4 notices x 2 webhooks
    shown = json.loads(run_cli("notify", "status", "--json", env=project_env(redis_url, env / "state")).stdout)
    assert sorted(e["key"] for e in shown["open"]) == sorted(store.episodes(client))
    assert {e["topic"] for e in shown["open"]} == {"backup.stale", "pause.overdue", "replication.lag"}
    for step in (10, 30, 30):  # still true: not told again
        clock.t += step
        lag(client, 30.0, clock.t)
        assert n.check() == ([], []) and n.push() == []
    backups.record(client, "ledger-live", {"last_snapshot_time": clock.t, "last_verified_time": clock.t})
    controls.clear_pause(client, "ledger")
    clock.t += 10
    lag(client, 0.0, clock.t)
    assert other.check() == ([], [])  # judged 10 s ago: one judgement per `checks.every` (30 s) fleet-wide
    clock.t += 20
    lag(client, 0.0, clock.t)
    assert len(n.check()[1]) == 4
    assert [o.status for o in n.push()] == ["delivered"] * 8
    clock.t += 30
    assert n.check() == ([], []) and n.push() == []
    plain = [p["body"] for p in receiver.posts if p["path"] == "/hook"]
    assert len(plain) == 8 and [b["resolved"] for b in plain] == [False] * 4 + [True] * 4
    assert {(b["topic"], tuple(sorted(b["labels"].items()))) for b in plain} == {
        ("backup.stale", (("check", "restore"), ("set", "ledger-live"))),
        ("backup.stale", (("check", "snapshot"), ("set", "ledger-live"))),
        ("pause.overdue", (("scope", "ledger"),)),
        ("replication.lag", (("node", "core-b"), ("service", "ledger")))}
    alerts = [p["body"]["alerts"][0] for p in receiver.posts if p["path"] == "/am"]
    by_fp: dict[str, list[str]] = {}
    for a in alerts:
        by_fp.setdefault(a["fingerprint"], []).append(a["status"])
    assert sorted(by_fp.values()) == [["firing", "resolved"]] * 4
    assert store.episodes(client) == {}


def test_the_delivery_loop_judges_the_conditions(redis_url: str, env: Path, receiver: Receiver) -> None:
    """The loop a control worker runs (on a thread, the wall clock): an expired pause is told, its resume too."""
    receiver.start()
    client = connect(redis_url)
    path = env / "notifications.yml"
    path.write_text(f"version: 1\nchecks: {{every: 100ms}}\nwebhooks:\n  ops: {{url: '{receiver.url()}'}}\n")
    n = watching(redis_url, load_notifications(path), time.time)
    controls.set_pause(client, None, {"who": "ops", "at": time.time() - 60, "until": time.time() - 1})
    stop = threading.Event()
    loop = threading.Thread(target=n.run, args=(stop,), kwargs={"block_ms": 50}, daemon=True)
    loop.start()
    try:
        wait_for(lambda: len(receiver.posts) == 1, timeout=30, what="the overdue pause told")
        controls.clear_pause(client, None)
        wait_for(lambda: len(receiver.posts) == 2, timeout=30, what="its resume told")
    finally:
        stop.set()
        loop.join(10)
    assert [(p["body"]["topic"], p["body"]["labels"], p["body"]["resolved"]) for p in receiver.posts] == [
        ("pause.overdue", {"scope": "all"}, False), ("pause.overdue", {"scope": "all"}, True)]


def test_an_episode_is_closed_only_by_a_judge_that_read_it(redis_url: str) -> None:
    """A judge that read an episode which has since ended and begun anew must not close the new one."""
    client = connect(redis_url)
    key = "pause.overdue|scope=ledger"
    assert store.open_episode(client, key, {"since": 1.0, "notice": {}}, {}, 1.0)
    assert not store.open_episode(client, key, {"since": 2.0, "notice": {}}, {}, 2.0)  # one open per key
    first = store.episodes(client)[key]
    assert store.close_episode(client, key, first, {}, 3.0)
    assert store.open_episode(client, key, {"since": 4.0, "notice": {}}, {}, 4.0)
    assert not store.close_episode(client, key, first, {"ops|late": {"status": "pending"}}, 5.0)
    assert json.loads(store.episodes(client)[key])["since"] == 4.0
    assert store.due(client, 10.0, 10) == []  # the refused close owed nothing


def test_an_unreadable_episode_is_replaced_by_a_clean_one(redis_url: str, env: Path, receiver: Receiver) -> None:
    """A garbled episode value would otherwise hold its key forever: never resolved, never announced again."""
    receiver.start()
    client = connect(redis_url)
    clock = Clock()
    overdue = Watch(clock.t, pauses=[PauseCheck("ledger", clock.t - 60, clock.t - 1, True)])
    n = Notifier(client, lambda: config(env, receiver), lambda: "f", clock=clock, watch=lambda now: overdue)
    client.hset(keys.notify_episodes(), "pause.overdue|scope=ledger", "{not json")
    opened, closed = n.check()
    assert [x.labels for x in opened] == [{"scope": "ledger"}] and closed == []
    assert [o.status for o in n.push()] == ["delivered"]
    assert json.loads(store.episodes(client)["pause.overdue|scope=ledger"])["since"] == clock.t
