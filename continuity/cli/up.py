"""``continuity up``: the embedded fleet (redis-server, a worker per node, beat, Flower) in one terminal.

The processes are started and supervised by :class:`continuity.runtime.Runtime`;
this module prints where everything is and, on a terminal, keeps the status
tables of ``continuity status`` live until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import typer
from rich.live import Live

from continuity import paths, redact, secretfiles, settings
from continuity.blueprint import load_blueprint
from continuity.cli.output import console
from continuity.cli.status import read_report, status_table
from continuity.runtime import Runtime, lock_down_state, require_ok

commands = typer.Typer()


@commands.command("up")
def up(
    flower_port: int = typer.Option(5555, help="Flower port (a free one is picked if taken)."),
    concurrency: int = typer.Option(2, help="Worker processes per node."),
    metrics_port: int = typer.Option(None, help="Port of /metrics (default $CONTINUITY_METRICS_PORT, 9640; 0 picks "
                                                "a free one; a free one is picked if taken)."),
    live: bool = typer.Option(True, "--live/--no-live", help="Show a live status table (default on a TTY)."),
) -> None:
    """Start the embedded fleet: redis-server, one worker per node, beat and Flower. Ctrl-C stops it all."""
    lock_down_state()  # before anything writes under it (loading the blueprint keeps a last-good copy)
    bp = load_blueprint(paths.blueprint_path())
    rt = Runtime(bp, flower_port=flower_port, concurrency=concurrency, metrics_port=metrics_port)

    def _term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    url_file = paths.state_dir() / "redis.url"
    try:
        rt.start()
        secretfiles.write_private(url_file, rt.url + "\n")  # it holds the Redis password
        time.sleep(0.5)
        require_ok(rt)
        console.print(f"[bold]continuity[/] fleet [cyan]{bp.model.fleet}[/] up: "
                      f"{len(bp.nodes)} nodes, beat, Flower at [link={rt.flower_url}]{rt.flower_url}[/]")
        if rt.metrics is not None:
            console.print(f"metrics: [link={rt.metrics.url}]{rt.metrics.url}[/]   (Prometheus text format; "
                          "`continuity metrics` prints them once)")
        login = "$CONTINUITY_FLOWER_AUTH" if settings.FLOWER_AUTH.is_set() else secretfiles.keys_dir() / "flower.auth"
        console.print(f"flower login (user:password): {login}")
        console.print(f"redis: {redact.scrub(rt.url)} (password in {url_file})   logs: {paths.state_dir() / 'logs'}   "
                      "Ctrl-C stops everything")
        sys.stdout.flush()
        os.environ[settings.REDIS_URL.name] = rt.url
        if live and sys.stdout.isatty():
            with Live(console=console, refresh_per_second=1) as view:
                while True:
                    for name in rt.supervise_once():
                        console.print(f"restarted {name}")
                    try:
                        view.update(status_table(read_report()))
                    except Exception as exc:  # noqa: BLE001 - keep supervising while Redis restarts
                        view.update(f"status unavailable: {exc}")
                    time.sleep(1)
        else:
            while True:
                for name in rt.supervise_once():
                    print(f"continuity: restarted {name}", flush=True)
                time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        rt.stop()
        url_file.unlink(missing_ok=True)
        console.print("stopped")
