"""`continuity drill list|run|report|recover`: rehearse failures and read what they measured."""

from __future__ import annotations

import time
from typing import Any

import typer

from continuity import paths
from continuity.cli.output import console, emit_json
from continuity.durations import format_duration
from continuity.errors import ContinuityError, ExitCode, UsageError

app = typer.Typer(help="Chaos drills: list scenarios, run one (or plan it with --dry-run), read reports.",
                  no_args_is_help=True)


def _load() -> tuple[Any, Any]:
    from continuity.blueprint import load_blueprint
    from continuity.drills.scenarios import load_scenarios

    bp = load_blueprint(paths.blueprint_path())
    return bp, load_scenarios(paths.scenarios_path(), bp)


def _dur(v: Any) -> str:
    return "—" if v is None else format_duration(float(v))


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Scenarios in ops/drills/continuity_scenarios.yaml with their target, fault and environments."""
    _bp, scenarios = _load()
    rows = []
    for name in scenarios.names():
        sc = scenarios.get(name)
        rows.append({"name": name, "title": sc.title, "fault": sc.fault.type, "target": sc.target.kind,
                     "duration": sc.duration, "environments": scenarios.environments(name),
                     "game_day": sc.game_day})
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("scenario", "fault", "target", "duration", "environments", "title")
    for r in rows:
        table.add_row(r["name"], r["fault"], r["target"], _dur(r["duration"]), ",".join(r["environments"]), r["title"])
    console.print(table)


def _client() -> Any:
    from continuity.redisd import connect

    return connect()


@app.command("run")
def run(
    name: str = typer.Argument(..., help="Scenario name (see `continuity drill list`)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve targets and print the plan; touch nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Run one drill: guards, steady state, inject, observe, rollback, re-check, measure, record."""
    from continuity.drills.runner import Runner

    bp, scenarios = _load()
    scenarios.get(name)
    runner = Runner(_client(), bp, scenarios,
                    progress=None if as_json else lambda phase, info: console.print(f"[dim]{phase}[/dim]"))
    result = runner.run(name, dry_run=dry_run)
    if as_json:
        emit_json(result)
    elif dry_run:
        _print_plan(result)
    else:
        _print_record(result)
    if dry_run:
        if result.get("refusal"):
            raise UsageError(result["refusal"])
        return
    if result.get("status") != "passed":
        raise typer.Exit(int(ExitCode.FAILED))


def _print_plan(plan: dict[str, Any]) -> None:
    t = plan["target"]
    console.print(f"[bold]{plan['scenario']}[/bold] — {plan['title']} (dry run: nothing touched)")
    console.print(f"  environment {plan['environment']} (allowed: {', '.join(plan['allowed_environments'])})")
    console.print(f"  target: {t['kind']} nodes={t['nodes']} services={t['services']}")
    fault = plan["fault"]
    action = fault.get("action") or fault.get("error")
    console.print(f"  fault: {fault['type']} {fault.get('params') or ''} -> {action}")
    for r in plan.get("rollbacks") or []:
        console.print(f"  rollback: {r}")
    console.print(f"  duration {_dur(plan['duration'])}; steady state: {', '.join(plan['steady_state'])}")
    console.print(f"  expectations: {plan['expectations']}")
    if plan.get("refusal"):
        console.print(f"  [red]would be refused:[/red] {plan['refusal']}")


def _print_record(rec: dict[str, Any]) -> None:
    m = rec.get("metrics") or {}
    color = "green" if rec.get("status") == "passed" else "red"
    console.print(f"[bold]{rec['id']}[/bold] [{color}]{rec.get('status')}[/{color}]")
    console.print(f"  detection {_dur(m.get('detection_time'))}  MTTR {_dur(m.get('mttr'))}  "
                  f"RPO {_dur(m.get('achieved_rpo'))}  lost {m.get('data_lost')}  failovers {m.get('failover_count')}")
    for e in rec.get("expectations") or []:
        mark = "[green]ok[/green]" if e["ok"] else "[red]FAILED[/red]"
        console.print(f"  {mark} {e['name']}: expected {e['expected']}, measured {e['measured']}")
    if rec.get("aborted"):
        console.print(f"  aborted: {rec['aborted']}")
    if rec.get("postmortem"):
        console.print(f"  postmortem draft: {rec['postmortem']}")


@app.command("report")
def report(
    drill_id: str = typer.Argument(None, help="A drill id; without it, the recent drills."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    limit: int = typer.Option(20, help="How many recent drills to list."),
) -> None:
    """A drill's record (metrics, expectations, postmortem path), or the list of recent drills."""
    from continuity.report import read_drills

    client = _client()
    if drill_id:
        from continuity.drills.runner import Runner

        bp, scenarios = _load()
        rec = Runner(client, bp, scenarios).get_record(drill_id)
        if rec is None:
            raise UsageError(f"no drill {drill_id!r} (see `continuity drill report`)")
        if as_json:
            emit_json(rec)
        else:
            _print_record(rec)
        return
    recs = read_drills(client, limit)
    if as_json:
        emit_json(recs)
        return
    from rich.table import Table

    table = Table("drill", "status", "started", "detection", "MTTR", "RPO", "lost")
    for r in recs:
        m = r.get("metrics") or {}
        table.add_row(r["id"], r.get("status", "?"), time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["started"])),
                      _dur(m.get("detection_time")), _dur(m.get("mttr")), _dur(m.get("achieved_rpo")),
                      str(m.get("data_lost", "—")))
    console.print(table)


@app.command("recover")
def recover(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Finish rollbacks left pending by a crashed or failed drill (every `drill run` also does this first)."""
    from continuity.drills.runner import Runner, acquire_lock, release_lock
    from continuity.state import keys

    bp, scenarios = _load()
    client = _client()
    runner = Runner(client, bp, scenarios)
    token = f"recover-{time.time():.0f}"
    if not acquire_lock(client, token):
        held = str(client.get(keys.drill_active()) or "?").split("|")[0]
        raise UsageError(f"a drill is running ({held}); recover after it ends")
    try:
        out = runner.recover()
    finally:
        release_lock(client, token)
    if as_json:
        emit_json(out)
    else:
        for o in out:
            console.print(f"{o['drill']}: {'completed' if o['ok'] else 'FAILED'} {o['ran']} {o['errors']}")
        if not out:
            console.print("no pending rollbacks")
    if any(not o["ok"] for o in out):
        raise ContinuityError("some rollbacks are still failing: " +
                              "; ".join(e for o in out for e in o["errors"]))


@app.command("postmortem")
def postmortem(
    record_id: str = typer.Argument(..., help="A drill id or a failover record id."),
    out_dir: str = typer.Option(None, "--out", help="Directory for the draft (default $CONTINUITY_STATE/postmortems)."),
) -> None:
    """(Re)render the draft postmortem of a drill or of a real failover, timeline from the pulse history."""
    from pathlib import Path

    from continuity import report as reports
    from continuity.drills.runner import Runner

    client = _client()
    bp, scenarios = _load()
    runner = Runner(client, bp, scenarios)
    record = runner.get_record(record_id)
    if record is None:
        from continuity.failover import records

        fo = records.get_record(client, record_id)
        if fo is None:
            raise UsageError(f"no drill or failover record {record_id!r}")
        fo["rto"] = bp.services[fo["service"]].rto if fo.get("service") in bp.services else None
        record = reports.failover_as_record(fo)
    start = float(record.get("started") or 0) - 30
    end = float(record.get("finished") or record.get("started") or 0) + 60
    events = runner.events(start, end)
    path = reports.write_postmortem(record, events, Path(out_dir) if out_dir else None)
    console.print(str(path))
