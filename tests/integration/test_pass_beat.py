"""Beat sends a satellite's store-and-forward copy when its pass starts, once per pass, expiring with the pass;
while the satellite is offline the copy waits in its queue and `continuity status` shows it with its expiry.

A real redis-server and the real scheduler class, driven entry by entry in this process. Passes are placed
around the wall clock with wide margins (a pass from a second ago to two minutes ahead; another an hour
away), so the outcome does not depend on how fast the machine is.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import redis
from celery import Celery
from redbeat.schedulers import RedBeatSchedulerEntry

from beat_schedule import NEVER_RUN
from continuity.blueprint import load_blueprint
from continuity.cli.status import queued_line
from continuity.passes import Pass, Schedule
from continuity.redisd import RedisServer
from continuity.state import fleet
from continuity.state.queued import parse
from continuity.status import build_report
from workers.beat import ContinuityScheduler

PREFIX = "test-pass-beat"

BLUEPRINT = """\
version: 1
fleet: t
nodes:
  ground: {kind: core}
  sat-1:
    kind: satellite
    passes: ["2026-12-01T03:10Z/PT9M"]
  sat-2:
    kind: satellite
    passes: ["2026-12-01T03:10Z/PT9M"]
domains:
  ops:
    rto: 1m
    rpo: 1m
    services:
      telemetry: {tier: 3, placement: {primary: sat-1}}
"""


def _entry(app: Celery, node: str) -> RedBeatSchedulerEntry:
    q = f"node.{node}"
    e = RedBeatSchedulerEntry(f"continuity.backup.copy:{node}", "continuity.backup.copy", timedelta(seconds=5),
                              args=["telemetry"], kwargs={"pass_start": None, "pass_end": None},
                              options={"queue": q, "routing_key": q, "expires": 5.0,
                                       "headers": {"continuity_pass_node": node, "continuity_pass_margin": 10.0}},
                              last_run_at=NEVER_RUN, app=app)  # as beat_schedule.build_schedule makes it
    e.save()
    return e


@pytest.fixture
def server(own_redis: RedisServer) -> RedisServer:
    return own_redis


def test_copy_is_sent_at_the_pass_once_and_shown_queued_with_its_expiry(server, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CONTINUITY_BEAT_LOCK_TIMEOUT", "10")
    app = Celery("pass-beat-test", broker=server.url)
    app.conf.update(redbeat_redis_url=server.url, redbeat_key_prefix=PREFIX, beat_max_loop_interval=1,
                    timezone="UTC")
    sched = ContinuityScheduler(app=app, lazy=True)
    now = time.time()
    in_pass = Pass(now - 1, now + 120)
    sched._contact = {"sat-1": Schedule(absolute=(in_pass,)),
                      "sat-2": Schedule(absolute=(Pass(now + 3600, now + 3690),))}
    client = redis.Redis.from_url(server.url, decode_responses=True)

    sat1, sat2 = _entry(app, "sat-1"), _entry(app, "sat-2")
    assert sched.apply_async(sat2) is None  # sat-2 is between passes: nothing sent
    assert client.llen("node.sat-2") == 0

    sent = sched.apply_async(sat1)
    assert sent is not None and client.llen("node.sat-1") == 1
    msg = json.loads(client.lindex("node.sat-1", 0))
    assert msg["headers"]["task"] == "continuity.backup.copy"
    assert "'pass_end': " + repr(in_pass.end) in msg["headers"]["kwargsrepr"]
    q = parse(client.lindex("node.sat-1", 0))
    assert q is not None and q.expires == pytest.approx(in_pass.end - 10.0, abs=5.0)  # expires with the pass

    again = RedBeatSchedulerEntry.from_key(sat1.key, app=app)  # as beat reloads it at its next tick
    assert sched.apply_async(again) is None  # once per pass
    assert client.llen("node.sat-1") == 1

    # the satellite is offline (no worker, never seen): status shows what waits for it and until when
    bpf = tmp_path / "blueprint.yml"
    bpf.write_text(BLUEPRINT)
    bp = load_blueprint(bpf)
    report = build_report(bp, fleet.read_snapshot(client, bp.services, bp.queues()), now=time.time())
    node = next(n for n in report["nodes"] if n["id"] == "sat-1")
    assert node["queue_depth"] == 1 and node["queued"][0]["task"] == "continuity.backup.copy"
    assert 0 < node["queued"][0]["expires_in"] <= 110 and not node["queued"][0]["expired"]
    line = queued_line(node)
    assert line.startswith("queued for sat-1 (offline): continuity.backup.copy ['telemetry'] expires in")
    assert next(n for n in report["nodes"] if n["id"] == "sat-2")["queued"] == []
    client.close()
