"""`continuity report`: the scorecard — declared RTO/RPO against what drills measured."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from continuity import paths
from continuity import report as scorecard
from continuity.blueprint import load_blueprint
from continuity.cli.output import console, emit_json
from continuity.redisd import connect

commands = typer.Typer()


@commands.command("report")
def report(
    as_json: bool = typer.Option(False, "--json", help="The scorecard as JSON."),
    markdown: bool = typer.Option(True, "--markdown", help="The scorecard as Markdown (the default)."),
    output: Path = typer.Option(None, "--output", "-o", help="Also write the Markdown scorecard to this file."),
    last: int = typer.Option(5, "--last", help="Worst-of window: how many recent drills per service."),
) -> None:
    """Per domain and tier: declared vs measured RTO/RPO, backup freshness, last verified restore, verdict."""
    bp = load_blueprint(paths.blueprint_path())
    card = scorecard.build(connect(), bp, time.time(), last)
    text = scorecard.scorecard_markdown(card)
    if output:
        output.write_text(text, encoding="utf-8")
    if as_json:
        emit_json(card)
    else:  # Markdown is the human form too: it pastes into tickets as is
        console.print(text, markup=False, highlight=False, soft_wrap=True)

