"""Process commands: ``up`` (the embedded fleet), ``worker``, ``beat``, ``flower``, ``status``."""

from __future__ import annotations

import os
import sys

import typer

from continuity import paths, settings
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
    env = {settings.NODE.name: node, settings.QUEUE.name: queue, settings.ROOT.name: str(paths.root())}
    _exec_celery(["worker", "-Q", ",".join(queues), "-n", f"{node}@%h", "-c", str(concurrency),
                  "-l", loglevel, "-E", "--without-gossip", "--without-mingle"], env)


def beat(loglevel: str = typer.Option("INFO", help="Celery log level.")) -> None:
    """Run celery beat with the Redis lock: a second beat is a hot standby."""
    import beat_schedule

    beat_schedule.build_schedule(load_blueprint(paths.blueprint_path()))  # bad ops/ config: exit 2 here, not later
    _exec_celery(["beat", "-S", "workers.beat:ContinuityScheduler", "-l", loglevel,
                  "-s", str(paths.state_dir() / "celerybeat-schedule")],
                 {settings.ROOT.name: str(paths.root())})


def _status_table(report: dict) -> object:
    from rich.console import Group
    from rich.table import Table

    from continuity.durations import format_duration

    nodes = Table(title=f"fleet {report['fleet']} — mode {report['mode'].get('mode', 'unknown')}")
    for col in ("node", "kind", "state", "last seen", "queue", "depth", "contact"):
        nodes.add_column(col)
    for n in report["nodes"]:
        ago = format_duration(n["seen_ago"]) + " ago" if n["seen_ago"] is not None else "never"
        nodes.add_row(n["id"], n["kind"], n["state"], ago, n["queue"], str(n["queue_depth"]),
                      "yes" if n["in_contact"] else "blackout")
    svcs = Table(title="services")
    for col in ("service", "domain", "tier", "RTO", "RPO", "primary", "standbys", "epoch"):
        svcs.add_column(col)
    for s in report["services"]:
        svcs.add_row(s["id"], s["domain"], str(s["tier"]), format_duration(s["rto"]), format_duration(s["rpo"]),
                     s["primary"], ", ".join(s["standbys"]) or "-", str(s["epoch"]))
    return Group(nodes, svcs)


def _report() -> dict:
    from continuity.redisd import connect
    from continuity.status import build_report, read_snapshot

    bp = load_blueprint(paths.blueprint_path())
    client = connect()
    try:
        return build_report(bp, read_snapshot(client, bp))
    except Exception as exc:
        import redis

        if isinstance(exc, redis.RedisError):
            from continuity.errors import ContinuityError

            raise ContinuityError(f"cannot read status from Redis: {exc}") from None
        raise
    finally:
        client.close()


def status(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Nodes (last seen, queue depth), services (tier, primary, standbys) and the continuity mode."""
    from continuity.cli.output import console, emit_json

    report = _report()
    if json_out:
        emit_json(report)
    else:
        console.print(_status_table(report))


def up(
    flower_port: int = typer.Option(5555, help="Flower port (a free one is picked if taken)."),
    concurrency: int = typer.Option(2, help="Worker processes per node."),
    live: bool = typer.Option(True, "--live/--no-live", help="Show a live status table (default on a TTY)."),
) -> None:
    """Start the embedded fleet: redis-server, one worker per node, beat and Flower. Ctrl-C stops it all."""
    import signal as _signal
    import time as _time

    from continuity.cli.output import console
    from continuity.runtime import Runtime, require_ok

    bp = load_blueprint(paths.blueprint_path())
    rt = Runtime(bp, flower_port=flower_port, concurrency=concurrency)

    def _term(*_: object) -> None:
        raise KeyboardInterrupt

    _signal.signal(_signal.SIGTERM, _term)
    url_file = paths.state_dir() / "redis.url"
    try:
        rt.start()
        url_file.write_text(rt.url + "\n")
        _time.sleep(0.5)
        require_ok(rt)
        console.print(f"[bold]continuity[/] fleet [cyan]{bp.model.fleet}[/] up: "
                      f"{len(bp.nodes)} nodes, beat, Flower at [link={rt.flower_url}]{rt.flower_url}[/]")
        console.print(f"redis: {rt.url}   logs: {paths.state_dir() / 'logs'}   Ctrl-C stops everything")
        sys.stdout.flush()
        os.environ[settings.REDIS_URL.name] = rt.url
        if live and sys.stdout.isatty():
            from rich.live import Live

            with Live(console=console, refresh_per_second=1) as view:
                while True:
                    for name in rt.supervise_once():
                        console.print(f"restarted {name}")
                    try:
                        view.update(_status_table(_report()))
                    except Exception as exc:  # noqa: BLE001 - keep supervising while Redis restarts
                        view.update(f"status unavailable: {exc}")
                    _time.sleep(1)
        else:
            while True:
                for name in rt.supervise_once():
                    print(f"continuity: restarted {name}", flush=True)
                _time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        rt.stop()
        url_file.unlink(missing_ok=True)
        console.print("stopped")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("beat")(beat)
    app.command("status")(status)
    app.command("up")(up)
