"""``continuity drill list``: the scenarios file, read and checked against the blueprint; no Redis needed."""

from __future__ import annotations

import typer

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
    # two lines per scenario rather than a table: at 80 columns a table cuts the names people type next
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        console.print(f"{r['name']:<{width}}  {r['fault']} on {r['target']}, {dur(r['duration'])}; runs in "
                      f"{', '.join(r['environments'])}{'; game day' if r['game_day'] else ''}",
                      markup=False, highlight=False, soft_wrap=True)
        console.print(f"{'':<{width}}  {r['title']}", markup=False, highlight=False, soft_wrap=True, style="dim")
