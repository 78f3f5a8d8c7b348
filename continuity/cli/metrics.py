"""``continuity metrics``: one scrape of the fleet's Prometheus metrics, printed.

The same exporter the control workers and ``continuity up`` serve at ``/metrics``
(:mod:`continuity.metrics.exporter`), run once: for a quick look without Prometheus, for scripts (``--json``),
and to see exactly what a scrape would return. An unreachable Redis still prints what can be known
(``continuity_up 0`` and this host's pulse file) and exits 1.
"""

from __future__ import annotations

import sys

import typer

from continuity.cli.output import emit_json
from continuity.errors import ExitCode
from continuity.metrics.exporter import as_json, blueprint_or_last_good, exposition, from_files
from continuity.redisd import connect

commands = typer.Typer()


@commands.command("metrics")
def metrics(as_json_out: bool = typer.Option(False, "--json", help="As JSON: metric -> type, help, samples.")) -> None:
    """Print the fleet's Prometheus metrics once (what /metrics serves): backups, services, replication, nodes,
    drills, pulse."""
    blueprint_or_last_good()  # a broken blueprint with no last good copy: exit 2 with its file:line, before output
    samples = from_files(lambda: connect(socket_timeout=5), background=False).samples()
    if as_json_out:
        emit_json(as_json(samples))
    else:
        sys.stdout.write(exposition(samples))
        sys.stdout.flush()
    if not any(s.metric.name == "continuity_up" and s.value == 1 for s in samples):
        typer.echo("continuity: cannot read the fleet's state from Redis (continuity_up 0)", err=True)
        raise typer.Exit(int(ExitCode.FAILED))
