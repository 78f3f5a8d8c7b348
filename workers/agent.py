"""The node agent as a worker bootstep: it lives exactly as long as the node's worker process.

A queued task could sit behind a long backup on the node's queue, and a beat
that is late is a false failover; a bootstep runs beside the consumer, in the
worker's main process, from pool start to shutdown. All logic is in
:mod:`continuity.detect.agent`; this only wires it to the worker's lifecycle.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from continuity import paths, settings
from continuity.blueprint import load_blueprint
from continuity.detect.agent import Agent, AgentRunner
from continuity.pulse import Pulse
from continuity.redisd import connect, diagnose, fleet_url, no_retry, peer_address
from continuity.state.heartbeats import ensure_heartbeat_key
from workers.app import app

log = logging.getLogger("continuity.agent")


def short_client(timeout: float) -> Any:
    """A client that fails fast and never retries: the agent must notice a dead Redis within a beat."""
    return connect(socket_timeout=timeout, socket_connect_timeout=timeout, retry=no_retry(),
                   health_check_interval=0)


def build_runner(node: str) -> AgentRunner:
    bp = load_blueprint(paths.blueprint_path())
    if node not in bp.nodes:
        raise ValueError(f"{settings.NODE.name}={node!r} is not a node of {bp.source}")
    timeout = max(0.2, min(0.5, bp.policy.heartbeat_interval / 2))
    pulse = Pulse(client=short_client(timeout), node=node)
    client = short_client(timeout)
    url = fleet_url()

    def explain(exc: BaseException) -> Any:
        """Why a beat failed: the error, and with Sentinel what the sentinels say about the master."""
        return diagnose(exc, url, peer_address(client), timeout=timeout)

    agent = Agent(bp, node, client, ensure_heartbeat_key(node), pulse=pulse, diagnose=explain)
    return AgentRunner(agent)


class NodeAgentStep(bootsteps.StartStopStep):
    """Heartbeats, lease renewal and self-fencing for the node named by $CONTINUITY_NODE."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.runner: AgentRunner | None = None

    def start(self, worker: Any) -> None:
        node = settings.NODE.get()
        if not node:
            return
        try:
            self.runner = build_runner(node).start()
        except Exception:  # noqa: BLE001 - a worker without an agent is visible (no heartbeats), not fatal
            log.exception("node agent for %s could not start", node)
            return
        log.info("node agent for %s started (%d services watched)", node, len(self.runner.agent.services))

    def stop(self, worker: Any) -> None:
        """Graceful shutdown: stop beating and demote held roles, so nothing runs as primary unwatched."""
        runner, self.runner = self.runner, None
        if runner is None:
            return
        runner.stop()
        runner.agent.demote_all("worker shutting down")

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)


app.steps["worker"].add(NodeAgentStep)
