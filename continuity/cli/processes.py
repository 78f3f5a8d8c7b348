"""``continuity worker`` and ``continuity beat``: become a Celery process of the fleet.

Both check the blueprint here, so a bad node id or a broken ops/ file exits 2
with a clear line, then replace this process with Celery through
:mod:`continuity.cli.launch`, the CLI's one door to Celery.
"""

from __future__ import annotations

import typer

from continuity import paths, settings
from continuity.blueprint import load_blueprint
from continuity.cli import launch
from continuity.errors import UsageError
from continuity.notify.config import load_notifications

commands = typer.Typer()


@commands.command("worker")
def worker(
    node: str = typer.Option(..., "--node", help="Node id from the blueprint; consumes queue node.<id>."),
    concurrency: int = typer.Option(2, help="Worker processes for this node."),
    control: bool | None = typer.Option(None, "--control/--no-control",
                                        help="Also consume continuity.control (default: core nodes do)."),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
) -> None:
    """Run a Celery worker for one node's queue (hostname NODE@%h) that registers the node in Redis."""
    bp = load_blueprint(paths.blueprint_path())
    load_notifications(paths.notifications_path())  # a broken ops/notifications.yml: exit 2 here, not in the worker
    if node not in bp.nodes:
        raise UsageError(f"unknown node {node!r}; the blueprint declares: {', '.join(sorted(bp.nodes))}")
    queue = bp.queue(node)
    if control is None:
        control = bp.nodes[node].kind == "core"
    queues = [queue] + (["continuity.control"] if control else [])
    env = {settings.NODE.name: node, settings.QUEUE.name: queue, settings.ROOT.name: str(paths.root())}
    launch.exec_celery(["worker", "-Q", ",".join(queues), "-n", f"{node}@%h", "-c", str(concurrency),
                        "-l", loglevel, "-E", "--without-gossip", "--without-mingle"], env)


@commands.command("beat")
def beat(loglevel: str = typer.Option("INFO", help="Celery log level.")) -> None:
    """Run celery beat with the Redis lock: a second beat is a hot standby."""
    launch.check_beat_schedule(load_blueprint(paths.blueprint_path()))  # bad ops/ config: exit 2 here, not later
    launch.exec_celery(["beat", "-S", launch.BEAT_SCHEDULER, "-l", loglevel,
                        "-s", str(paths.state_dir() / "celerybeat-schedule")],
                       {settings.ROOT.name: str(paths.root())})
