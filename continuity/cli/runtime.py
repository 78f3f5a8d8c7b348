"""Process commands: ``up`` (the embedded fleet), ``worker``, ``beat``, ``flower``, ``status``."""

from __future__ import annotations

import os
import sys

import typer

from continuity import paths
from continuity.blueprint import load_blueprint
from continuity.errors import UsageError


def _exec_celery(args: list[str], env: dict[str, str]) -> None:
    os.environ.update(env)
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "workers.app", *args])


def worker(
    node: str = typer.Option(..., "--node", help="Node id from the blueprint; consumes queue node.<id>."),
    concurrency: int = typer.Option(2, help="Worker processes for this node."),
    control: bool | None = typer.Option(None, "--control/--no-control",
                                        help="Also consume continuity.control (default: core nodes do)."),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
) -> None:
    """Run a Celery worker for one node's queue (hostname NODE@%h) that registers the node in Redis."""
    bp = load_blueprint(paths.blueprint_path())
    if node not in bp.nodes:
        raise UsageError(f"unknown node {node!r}; the blueprint declares: {', '.join(sorted(bp.nodes))}")
    queue = bp.queue(node)
    if control is None:
        control = bp.nodes[node].kind == "core"
    queues = [queue] + (["continuity.control"] if control else [])
    env = {"CONTINUITY_NODE": node, "CONTINUITY_QUEUE": queue, "CONTINUITY_ROOT": str(paths.root())}
    _exec_celery(["worker", "-Q", ",".join(queues), "-n", f"{node}@%h", "-c", str(concurrency),
                  "-l", loglevel, "-E", "--without-gossip", "--without-mingle"], env)


def beat(loglevel: str = typer.Option("INFO", help="Celery log level.")) -> None:
    """Run celery beat with the Redis lock: a second beat is a hot standby."""
    load_blueprint(paths.blueprint_path())
    _exec_celery(["beat", "-S", "redbeat.RedBeatScheduler", "-l", loglevel],
                 {"CONTINUITY_ROOT": str(paths.root())})


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("beat")(beat)
