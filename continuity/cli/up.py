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

from continuity import paths, settings
from continuity.blueprint import load_blueprint
from continuity.cli.output import console
from continuity.cli.status import read_report, status_table
from continuity.runtime import Runtime, require_ok

commands = typer.Typer()


@commands.command("up")
def up(
    flower_port: int = typer.Option(5555, help="Flower port (a free one is picked if taken)."),
    concurrency: int = typer.Option(2, help="Worker processes per node."),
    live: bool = typer.Option(True, "--live/--no-live", help="Show a live status table (default on a TTY)."),
) -> None:
    """Start the embedded fleet: redis-server, one worker per node, beat and Flower. Ctrl-C stops it all."""
    bp = load_blueprint(paths.blueprint_path())
    rt = Runtime(bp, flower_port=flower_port, concurrency=concurrency)

    def _term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    url_file = paths.state_dir() / "redis.url"
    try:
        rt.start()
        url_file.write_text(rt.url + "\n")
        time.sleep(0.5)
        require_ok(rt)
        console.print(f"[bold]continuity[/] fleet [cyan]{bp.model.fleet}[/] up: "
                      f"{len(bp.nodes)} nodes, beat, Flower at [link={rt.flower_url}]{rt.flower_url}[/]")
        console.print(f"redis: {rt.url}   logs: {paths.state_dir() / 'logs'}   Ctrl-C stops everything")
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
