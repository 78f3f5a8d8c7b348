"""``continuity drill list``: the scenarios file, read and checked against the blueprint; no Redis needed."""

from __future__ import annotations

import typer

from continuity.cli import output
from continuity.cli.drill.common import dur, load
from continuity.cli.output import console, emit_json

commands = typer.Typer()


@commands.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Scenarios in ops/drills/continuity_scenarios.yaml with their target, fault and environments."""
    _bp, scenarios = load()
    rows = []
    for name in scenarios.names():
        sc = scenarios.get(name)
        rows.append({"name": name, "title": sc.title, "fault": sc.fault.type, "target": sc.target.kind,
                     "duration": sc.duration, "environments": scenarios.environments(name),
                     "game_day": sc.game_day})
    if as_json:
        emit_json(rows)
        return
    table = output.table("scenario", "fault", "target", "duration", "environments", "title")
    for r in rows:
        table.add_row(r["name"], r["fault"], r["target"], dur(r["duration"]), ",".join(r["environments"]), r["title"])
    console.print(table)
