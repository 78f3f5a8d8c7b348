"""`continuity report`: the scorecard — declared RTO/RPO against what drills measured.

One report (:func:`continuity.report.build`), four forms: a table for the
terminal (the default), Markdown for tickets (``--markdown``, ``-o FILE``),
JSON for scripts (``--json``) and a self-contained HTML page with charts
(``--html FILE``). Forms can be combined in one run, so they show the same
numbers read at the same instant.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from continuity import actions, paths
from continuity import report as scorecard
from continuity.blueprint import load_blueprint
from continuity.cli import output
from continuity.durations import format_duration
from continuity.errors import UsageError
from continuity.redisd import connect
from continuity.report_html import render
from continuity.stewardship import load_stewardship

commands = typer.Typer()


def _dur(value: float | None) -> str:
    return "—" if value is None else format_duration(value)


def terminal_view(card: dict[str, Any]) -> Any:
    """The scorecard as one table a terminal shows at 80 columns without cutting a service name."""
    t = output.table(title=f"scorecard — overall {card['verdict']} (measured: latest / worst of the last "
                           f"{card['last_n']} drills)")
    t.add_column("service", no_wrap=True)
    for col in ("tier", "RTO", "measured", "RPO", "measured", "backup age", "verified"):
        t.add_column(col)
    t.add_column("verdict", no_wrap=True)
    for sid, r in card["services"].items():
        sets = r["backup"]["sets"]
        age = ", ".join(_dur(s["last_snapshot_age"]) for s in sets) or "—"
        verified = ", ".join(("never" if s["last_verified_restore"] is None else
                              _dur(card["generated"] - s["last_verified_restore"]) + " ago"
                              + ("" if s["last_verify_ok"] else " FAILED")) for s in sets) or "—"
        t.add_row(sid, str(r["tier"]), _dur(r["rto"]["declared"]), f"{_dur(r['rto']['latest'])} / "
                  f"{_dur(r['rto']['worst'])}", _dur(r["rpo"]["declared"]),
                  f"{_dur(r['rpo']['latest'])} / {_dur(r['rpo']['worst'])}", age, verified, r["verdict"])
    return t


def action_items(client: Any, now: float) -> dict[str, Any]:
    """Postmortem action items for the scorecard: how many are open, and every overdue one (verified trail only)."""
    items = actions.load(client, load_stewardship(paths.stewards_path()))
    late = actions.overdue(items, now)
    return {"open": sum(1 for i in items if i.closed is None), "overdue": [i.to_dict(now) for i in late]}


def overdue_lines(card: dict[str, Any]) -> list[str]:
    late = card["postmortem_actions"]["overdue"]
    return [f"OVERDUE action {i['id']} ({i['record']}): {i['title']} — owner {i['owner']}, due "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(i['due']))} UTC" for i in late]


@commands.command("report")
def report(
    as_json: bool = typer.Option(False, "--json", help="The scorecard as JSON (with the drills, failovers and "
                                                       "backup sets the HTML page draws)."),
    markdown: bool = typer.Option(False, "--markdown", help="The scorecard as Markdown (pastes into tickets)."),
    html: Path = typer.Option(None, "--html", help="Write a self-contained HTML page with charts to this file."),
    output_file: Path = typer.Option(None, "--output", "-o", help="Also write the Markdown scorecard to this file."),
    last: int = typer.Option(scorecard.LAST_N, "--last", min=1,
                             help="Worst-of window: how many recent drills per service."),
    history_n: int = typer.Option(scorecard.HISTORY_N, "--history", min=1,
                                  help="How many recent drills and failovers the timeline and trends show."),
) -> None:
    """Per domain and tier: declared vs measured RTO/RPO, backup freshness, last verified restore, verdict."""
    if as_json and markdown:
        raise UsageError("--json and --markdown both print the scorecard on stdout: pick one")
    bp = load_blueprint(paths.blueprint_path())
    client, now = connect(), time.time()
    card = scorecard.build(client, bp, now, last, history_n)
    card["postmortem_actions"] = action_items(client, now)
    if output_file:
        output_file.write_text(scorecard.scorecard_markdown(card), encoding="utf-8")
    if html:
        try:
            html.write_text(render(card), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{html}: cannot write: {exc.strerror or exc}") from None
    if as_json:
        output.emit_json(card)
    elif markdown:
        output.console.print(scorecard.scorecard_markdown(card), markup=False, highlight=False, soft_wrap=True)
    elif html:
        output.console.print(f"{html}: scorecard written ({card['verdict']})", markup=False, highlight=False)
    else:
        output.console.print(terminal_view(card))
        for line in overdue_lines(card):
            output.console.print(line, markup=False, highlight=False)
