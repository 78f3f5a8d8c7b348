"""What a control worker does for the people watching: serve ``/metrics`` and deliver webhook notifications.

A bootstep (like the node agent, :mod:`workers.agent`) in the main process of every worker that consumes the
control queue, from pool start to shutdown, with two threads:

* the metrics endpoint (:class:`continuity.metrics.exporter.PortHolder`) on ``$CONTINUITY_METRICS_ADDR:
  $CONTINUITY_METRICS_PORT``: on a host running several control workers (or ``continuity up``, which binds first)
  one serves and the others keep trying, so the endpoint survives the loss of any one of them;
* the notification loop (:class:`continuity.notify.deliver.Notifier`): every control worker runs one, and the
  deliveries' keys and claims in Redis make them share the work without sending anything twice. The same loop
  judges the watched conditions (stale backups, overdue pauses, standbys lagging past their RPO) every
  ``checks.every``, one control worker per interval (:func:`continuity.notify.watch.read_watch`).

All the logic is in ``continuity.metrics`` and ``continuity.notify``; this wires it to the worker's lifecycle and
to the shell's cached Redis client, last-good blueprint and config-error reporting.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from continuity import paths, pulse, settings
from continuity.config_watch import LastGood
from continuity.metrics.exporter import Exporter, PortHolder
from continuity.notify.config import Notifications, load_notifications
from continuity.notify.deliver import Notifier
from continuity.notify.watch import read_watch
from continuity.redisd import connect
from workers.app import CONTROL_QUEUE, app
from workers.task import blueprint, redis_client, tell_config_news

log = logging.getLogger("continuity.observe")

# the notification loop blocks on the pulse stream for up to a second: its socket must outlast that
NOTIFY_REDIS = {"socket_timeout": 5, "socket_connect_timeout": 3}
_watch: LastGood[Notifications] | None = None


def notifications() -> Notifications:
    """ops/notifications.yml, re-read when it changes; while an edit leaves it broken, the last good content."""
    global _watch
    if _watch is None:
        _watch = LastGood(load_notifications, keep_copy=paths.last_good("notifications.yml"))
    path = paths.notifications_path()
    loaded = _watch.get(path)
    if loaded.news is not None:
        tell_config_news(loaded.news, str(path), loaded.error)
    return loaded.value


def webhooks() -> list[str]:
    return sorted(notifications().webhooks)


def build_exporter() -> Exporter:
    return Exporter(lambda: redis_client(socket_timeout=5), blueprint, webhooks)


def build_notifier() -> Notifier:
    client = connect(**NOTIFY_REDIS)
    return Notifier(client, notifications, lambda: blueprint().model.fleet, pulse=pulse.default(),
                    watch=lambda now: read_watch(client, blueprint(), now))


def consumes_control(worker: Any) -> bool:
    try:
        return CONTROL_QUEUE in worker.app.amqp.queues.consume_from
    except AttributeError:
        return False


class ObserveStep(bootsteps.StartStopStep):
    """The metrics endpoint and the notification loop of a control worker."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.holder: PortHolder | None = None
        self.stopping = threading.Event()
        self.loop: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        if not consumes_control(worker):
            return
        try:
            port = settings.METRICS_PORT.get()
            if port:
                self.holder = PortHolder(build_exporter(), port, settings.METRICS_ADDR.get()).start()
            notifier = build_notifier()
        except Exception:  # noqa: BLE001 - a worker without metrics or notifications still runs the fleet
            log.exception("metrics / notifications could not start")
            return
        self.stopping.clear()
        self.loop = threading.Thread(target=notifier.run, args=(self.stopping,), name="notify", daemon=True)
        self.loop.start()

    def stop(self, worker: Any) -> None:
        self.stopping.set()
        holder, self.holder = self.holder, None
        if holder is not None:
            holder.stop()

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)


app.steps["worker"].add(ObserveStep)
