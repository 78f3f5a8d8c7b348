"""What the ``continuity drill`` commands share: the blueprint with its scenarios, and how a record is printed."""

from __future__ import annotations

from typing import Any

from continuity import paths, text
from continuity.blueprint import Blueprint, load_blueprint
from continuity.cli.output import console
from continuity.drills.scenarios import Scenarios, load_scenarios
from continuity.durations import format_duration


def load() -> tuple[Blueprint, Scenarios]:
    """The blueprint and the scenarios checked against it (a bad file exits 2 naming file, line and key)."""
    bp = load_blueprint(paths.blueprint_path())
    return bp, load_scenarios(paths.scenarios_path(), bp)


def dur(v: Any) -> str:
    return "—" if v is None else format_duration(float(v))


def print_record(rec: dict[str, Any]) -> None:
    """A drill record for a human: status, the measurements, each expectation, where the postmortem is."""
    m = rec.get("metrics") or {}
    color = "green" if rec.get("status") == "passed" else "red"
    console.print(f"[bold]{rec['id']}[/bold] [{color}]{rec.get('status')}[/{color}]")
    console.print(f"  detection {dur(m.get('detection_time'))}  MTTR {dur(m.get('mttr'))}  "
                  f"RPO {dur(m.get('achieved_rpo'))}  lost {text.plain(m.get('data_lost'))}  "
                  f"failovers {text.plain(m.get('failover_count'))}", highlight=False)
    for e in rec.get("expectations") or []:
        mark = "[green]ok[/green]" if e["ok"] else "[red]FAILED[/red]"
        expected, measured = text.expectation(e)
        console.print(f"  {mark} {e['name']}: expected {expected}, measured {measured}", highlight=False)
    if rec.get("aborted"):
        console.print(f"  aborted: {rec['aborted']}")
    if rec.get("postmortem"):
        console.print(f"  postmortem draft: {rec['postmortem']}")
