"""The metrics as Prometheus sees them: a collector that reads the fleet at scrape time, and its HTTP server.

A custom collector (not gauges set by a timer) because every value already lives in Redis: reading it when
Prometheus asks gives the freshest numbers and no second copy to keep in step. A scrape that cannot read Redis
still answers, with ``continuity_up 0`` (and this host's pulse file series), so "the fleet's state is unreadable"
is itself something Prometheus can alert on, distinct from "the exporter is gone".

:func:`serve` binds the port or returns None when it is taken: on a host running several control workers (or
``continuity up`` and its workers) exactly one serves, and the others try again later
(:class:`PortHolder`), so one of them takes over when the server's process goes away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from continuity import paths
from continuity.blueprint import Blueprint, load_blueprint
from continuity.config_watch import load_or_last_good
from continuity.errors import ContinuityError
from continuity.metrics import catalogue, read
from continuity.metrics.compute import Sample, compute, pulse_file, unreachable
from continuity.metrics.pulsecheck import PulseCheck
from continuity.notify.config import load_notifications

log = logging.getLogger("continuity.metrics")


class Exporter:
    """Reads the fleet and computes the samples, on demand.

    ``client`` and ``blueprint`` are called for every scrape (a worker passes its cached client and its
    last-good blueprint); ``background`` says whether the pulse file is verified on a thread (a server) or inline
    (a one-shot command)."""

    def __init__(self, client: Callable[[], Any], blueprint: Callable[[], Blueprint],
                 webhooks: Callable[[], Iterable[str]] = tuple, pulse_check: PulseCheck | None = None,
                 background: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.blueprint = blueprint
        self.webhooks = webhooks
        self.pulse_check = pulse_check or PulseCheck()
        self.background = background
        self.clock = clock

    def samples(self) -> list[Sample]:
        started = time.monotonic()
        client = None
        try:
            client = self.client()
            bp = self.blueprint()
            out = compute(bp, read.read(client, bp, self.webhooks(), clock=self.clock))
        except Exception as exc:  # noqa: BLE001 - a scrape says "cannot read" (continuity_up 0), never fails
            log.warning("metrics: cannot read the fleet's state: %s", exc)
            out = unreachable(time.monotonic() - started)
            client = None  # do not wait on an unreachable Redis a second time for the pulse check
        try:
            out += pulse_file(self.pulse_check.current(client, self.background))
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable file: no pulse series
            log.warning("metrics: cannot read the pulse history file: %s", exc)
        return out


def blueprint_or_last_good() -> Blueprint:
    """The fleet's blueprint as a process outside the workers reads it: the file, or the last copy that loaded."""
    return load_or_last_good(load_blueprint, paths.blueprint_path(), paths.last_good("blueprint.yml")).value


def configured_webhooks() -> list[str]:
    """Webhook names of ops/notifications.yml (none when it is missing or broken: the metrics still serve)."""
    try:
        return sorted(load_notifications(paths.notifications_path()).webhooks)
    except ContinuityError:
        return []


def from_files(client: Callable[[], Any], background: bool) -> Exporter:
    """An exporter for ``continuity up`` and ``continuity metrics``: blueprint and webhooks read from the ops/
    files at each scrape (the workers pass their own cached, last-good copies instead)."""
    return Exporter(client, blueprint_or_last_good, configured_webhooks, background=background)


def families(samples: Sequence[Sample]) -> list[Metric]:
    """prometheus_client families in catalogue order, one per metric that has samples."""
    by_name: dict[str, list[Sample]] = {}
    for s in samples:
        by_name.setdefault(s.metric.name, []).append(s)
    out: list[Metric] = []
    for name, metric in catalogue.METRICS.items():
        got = by_name.get(name)
        if not got:
            continue
        family_type = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
        family = family_type(metric.family, metric.help, labels=list(metric.labels))
        for s in got:
            family.add_metric([v for _k, v in s.labels], s.value)
        out.append(family)
    return out


class ScrapeCollector(Collector):
    def __init__(self, source: Callable[[], Sequence[Sample]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from families(self.source())

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: the families are known only at scrape time


def registry_for(source: Callable[[], Sequence[Sample]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(source))
    return registry


def exposition(samples: Sequence[Sample]) -> str:
    """The Prometheus text format of ``samples`` (what ``/metrics`` serves)."""
    return generate_latest(registry_for(lambda: samples)).decode()


def as_json(samples: Sequence[Sample]) -> dict[str, Any]:
    """metric name -> {type, help, samples: [{labels, value}]} (``continuity metrics --json``)."""
    out: dict[str, Any] = {}
    for s in samples:
        entry = out.setdefault(s.metric.name, {"type": s.metric.kind, "help": s.metric.help, "samples": []})
        entry["samples"].append({"labels": dict(s.labels), "value": s.value})
    return out


@dataclass
class Server:
    httpd: Any
    thread: threading.Thread
    addr: str
    port: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("0.0.0.0", "") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(exporter: Exporter, port: int, addr: str) -> Server | None:
    """Serve ``/metrics`` on ``addr:port`` from a thread; None when the port is taken (another process serves)."""
    try:
        httpd, thread = start_http_server(port, addr=addr, registry=registry_for(exporter.samples))
    except OSError:
        return None
    return Server(httpd, thread, addr, int(httpd.server_address[1]))


class PortHolder:
    """Serve when the port is free; otherwise try again every ``retry`` seconds until :meth:`stop`.

    Several processes on one host share one port without coordinating: the first to bind serves, the others stay
    quiet (one log line) and keep trying, so one of them takes over when the server's process goes away."""

    def __init__(self, exporter: Exporter, port: int, addr: str, retry: float = 30.0) -> None:
        self.exporter = exporter
        self.port = port
        self.addr = addr
        self.retry = retry
        self.server: Server | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PortHolder:
        self._thread = threading.Thread(target=self._run, name="metrics-port", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        told = False
        while not self._stop.is_set():
            self.server = serve(self.exporter, self.port, self.addr)
            if self.server is not None:
                log.info("metrics served at %s", self.server.url)
                return
            if not told:
                log.info("metrics port %s:%d is taken (another process of this host serves); retrying every %.0fs",
                         self.addr, self.port, self.retry)
                told = True
            self._stop.wait(self.retry)

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.close()
            self.server = None
