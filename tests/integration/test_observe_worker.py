"""Real control workers serve /metrics and deliver webhook notifications (workers/observe.py).

Two core-node workers on one host: one serves the metrics port, the other finds it taken and stays quiet; both
run the notification loop, and a failover still reaches the receiver exactly once.
"""

from __future__ import annotations

from pathlib import Path

from continuity.redisd import connect, free_port
from continuity.state import keys
from continuity.state import notifications as store
from tests.helpers import wait_for
from tests.integration.test_notify_delivery import a_failover
from tests.metrics_support import Receiver, get, parse


def test_control_workers_serve_metrics_and_notify_once(start_worker, worker_env: dict[str, str], redis_url: str,
                                                       tmp_path: Path) -> None:
    receiver = Receiver().start()
    try:
        cfg = tmp_path / "notifications.yml"
        cfg.write_text(f"version: 1\nwebhooks:\n  ops:\n    url: {receiver.url()}\n    format: json\n")
        port = free_port()
        env = dict(worker_env, CONTINUITY_METRICS_PORT=str(port), CONTINUITY_NOTIFICATIONS=str(cfg))
        first = start_worker("core-a", env=env)
        scraped = wait_for(lambda: parse(get(f"http://127.0.0.1:{port}/metrics")), timeout=30,
                           what="the worker's /metrics")
        assert scraped["continuity_up"] == {(): 1.0}
        assert (("node", "core-a"), ("state", "alive")) in scraped["continuity_node_state"]
        second = start_worker("core-b", env=env)
        wait_for(lambda: "metrics port" in second.output() and "is taken" in second.output(), timeout=30,
                 what="the second worker to find the port taken")
        assert "Traceback" not in second.output()

        client = connect(redis_url)
        wait_for(lambda: client.exists(keys.notify_cursor()), timeout=30, what="a notification loop to start")
        rid = a_failover(client)
        wait_for(lambda: store.stats(client).get(("ops", "delivered")) == 1, timeout=30,
                 what="the failover's notification delivered")
        assert [p["body"]["topic"] for p in receiver.posts] == ["failover.completed"]
        assert rid in receiver.posts[0]["body"]["text"]
        # the metrics count it too
        delivered = parse(get(f"http://127.0.0.1:{port}/metrics"))["continuity_notifications_delivered_total"]
        assert delivered == {(("webhook", "ops"),): 1.0}
        assert first.alive() and second.alive()
    finally:
        receiver.stop()
