"""The Celery application and the settings continuity depends on.

Each setting below is here for a failure mode seen in the field: late acks and
reject-on-lost so a killed worker's task is redelivered (effects are keyed, so
redelivery is a no-op), prefetch 1 so a node does not hoard work it may never
run, JSON only so no pickle ever crosses the wire, events on so Flower sees
tasks still queued for an offline satellite.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import before_task_publish
from kombu import Exchange, Queue

from continuity import paths, settings, task_auth
from continuity.blueprint import Blueprint, load_blueprint
from continuity.errors import ContinuityError
from continuity.redisd import celery_urls, fleet_url, redbeat_config
from workers import broker

CONTROL_QUEUE = "continuity.control"

TASK_MODULES = ["workers.node", "workers.backup", "workers.control", "workers.drills",
                "workers.agent",  # the node agent bootstep (heartbeats, leases, self-fencing)
                "workers.replication",  # the node's replicator process (continuous replication, sync mode, lag)
                "workers.shipping",  # the node's log shipper process (ledger appends to the repository, for PITR)
                "workers.failover",  # failover chain steps (fence, prepare, promote, repoint, verify, record)
                "workers.observe"]  # control workers: the /metrics endpoint and the webhook notification loop


def broker_url() -> str:
    url = fleet_url()
    if not url:
        # importing the app must not fail (Flower, `celery inspect`); connecting will say what is wrong
        return "redis://127.0.0.1:1/0"
    return url


def fleet_blueprint() -> Blueprint | None:
    try:
        return load_blueprint(paths.blueprint_path())
    except ContinuityError:
        return None


def build_queues(bp: Blueprint | None) -> list[Queue]:
    queues = [Queue(CONTROL_QUEUE, Exchange(CONTROL_QUEUE, type="direct"), routing_key=CONTROL_QUEUE)]
    if bp is not None:
        for q in bp.queues().values():
            queues.append(Queue(q, Exchange(q, type="direct"), routing_key=q))
    return queues


def make_app() -> Celery:
    """The app, configured from the environment as it is now (called once, below, at import)."""
    fleet = broker_url()
    url, transport = celery_urls(fleet)
    # Longer than any countdown we use, far shorter than Redis's 1 h default, so a task lost
    # with an unacked message comes back in minutes, not an hour.
    visibility_timeout = settings.VISIBILITY_TIMEOUT.get()
    app = Celery("continuity", broker=url, backend=url, include=[m for m in TASK_MODULES if _exists(m)])
    bp = fleet_blueprint()
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        task_time_limit=600,
        task_soft_time_limit=540,
        # results are read by whoever sent the task, within its timeout; the history is the failover/drill
        # records and the pulse, so a result kept for days is only a celery-task-meta key growing Redis
        result_expires=3600,
        result_extended=True,
        task_default_queue=CONTROL_QUEUE,
        task_queues=build_queues(bp),
        task_create_missing_queues=False,
        broker_transport_options={"visibility_timeout": visibility_timeout, **transport},
        result_backend_transport_options={"visibility_timeout": visibility_timeout, **transport},
        worker_hijack_root_logger=False,
        worker_disable_rate_limits=True,
        timezone="UTC",
        enable_utc=True,
        beat_scheduler="workers.beat:ContinuityScheduler",
        **redbeat_config(fleet),  # RedBeat spells Sentinel its own way (redis-sentinel:// plus options)
        redbeat_key_prefix=settings.KEY_PREFIX.get() + "beat",
        # takeover within a minute (RedBeat's default lock is 25 min)
        redbeat_lock_timeout=settings.BEAT_LOCK_TIMEOUT.get(),
        beat_max_loop_interval=settings.BEAT_MAX_LOOP.get(),
    )
    return app


@before_task_publish.connect
def sign_message(sender: Any = None, body: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Every message this process publishes carries a signature envelope (see :mod:`continuity.task_auth`);
    workers refuse control-plane tasks without a valid one."""
    if headers is None or not isinstance(body, (tuple, list)) or len(body) < 2:
        return
    task_auth.sign_headers(headers, body[0] or (), body[1] or {})


def _exists(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# `celery -A workers.app` and every task module need the app object at import: the one deliberate import-time read.
broker.install()  # a worker survives a Redis restart with a task in flight (workers/broker.py)
app = make_app()
