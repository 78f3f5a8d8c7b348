"""Per-node queues with real worker processes: a task routed to node A never runs on node B."""

from __future__ import annotations

import json

import pytest
from celery import Celery

from continuity.state import keys
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def _client_app(url: str) -> Celery:
    app = Celery("probe", broker=url, backend=url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    return app


def test_task_routed_to_a_runs_only_on_a(start_worker, redis_url, rds) -> None:
    start_worker("core-a")
    start_worker("core-b")
    app = _client_app(redis_url)
    results = []
    for i in range(6):
        target = "core-a" if i % 2 == 0 else "core-b"
        results.append((target, app.send_task("continuity.node.ping", args=[target], queue=f"node.{target}")))
    for target, res in results:
        out = res.get(timeout=60)
        assert out["node"] == target, f"task for {target} ran on {out['node']}"
        assert out["correct"] is True
    pings = [json.loads(f["event"]) for _, f in rds.xrange(keys.pulse_stream())]
    pings = [e for e in pings if e["kind"] == "continuity_layer.node.ping"]
    assert len(pings) == 6
    assert all(e["node"] == e["data"]["target"] for e in pings)
    app.close()


def test_task_for_offline_node_waits_in_its_queue(start_worker, redis_url, rds) -> None:
    """A satellite out of contact keeps its work queued (and nobody else steals it)."""
    start_worker("core-a")
    app = _client_app(redis_url)
    res = app.send_task("continuity.node.ping", args=["sat-1"], queue="node.sat-1", expires=120)
    control = app.send_task("continuity.node.ping", args=["core-a"], queue="node.core-a")
    assert control.get(timeout=60)["node"] == "core-a"
    assert rds.llen("node.sat-1") == 1
    assert res.state == "PENDING"
    start_worker("sat-1")
    assert res.get(timeout=60)["node"] == "sat-1"
    wait_for(lambda: rds.llen("node.sat-1") == 0, what="sat-1 queue drained")
    app.close()
