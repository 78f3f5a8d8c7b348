"""``continuity drill report`` and ``postmortem``: read drill records, and render postmortems from them.

A postmortem can also be drawn for a real failover, so this module reads
failover records too.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from continuity import report as reports
from continuity import settings
from continuity.cli import output
from continuity.cli.drill.common import dur, load, print_record
from continuity.cli.output import console, emit_json
from continuity.drills.runner import Runner
from continuity.errors import UsageError
from continuity.failover import records
from continuity.redisd import connect

commands = typer.Typer()


@commands.command("report")
def report(
    drill_id: str = typer.Argument(None, help="A drill id; without it, the recent drills."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    limit: int = typer.Option(20, help="How many recent drills to list."),
) -> None:
    """A drill's record (metrics, expectations, postmortem path), or the list of recent drills."""
    client = connect()
    if drill_id:
        bp, scenarios = load()
        rec = Runner(client, bp, scenarios).get_record(drill_id)
        if rec is None:
            raise UsageError(f"no drill {drill_id!r} (see `continuity drill report`)")
        if as_json:
            emit_json(rec)
        else:
            print_record(rec)
        return
    recs = reports.read_drills(client, limit)
    if as_json:
        emit_json(recs)
        return
    table = output.table("drill", "status", "started", "detection", "MTTR", "RPO", "lost", keep=("drill",))
    for r in recs:
        m = r.get("metrics") or {}
        table.add_row(r["id"], r.get("status", "?"), time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["started"])),
                      dur(m.get("detection_time")), dur(m.get("mttr")), dur(m.get("achieved_rpo")),
                      str(m.get("data_lost", "—")))
    console.print(table)


@commands.command("postmortem")
def postmortem(
    record_id: str = typer.Argument(..., help="A drill id or a failover record id."),
    out_dir: str = typer.Option(None, "--out", help="Directory for the draft (default $CONTINUITY_STATE/postmortems)."),
) -> None:
    """(Re)render the draft postmortem of a drill or of a real failover, timeline from the pulse history."""
    client = connect()
    bp, scenarios = load()
    runner = Runner(client, bp, scenarios)
    record = runner.get_record(record_id)
    if record is None:
        fo = records.get_record(client, record_id)
        if fo is None:
            raise UsageError(f"no drill or failover record {record_id!r}")
        fo["rto"] = bp.services[fo["service"]].rto if fo.get("service") in bp.services else None
        record = reports.failover_as_record(fo, settings.ENV.get())
    start = float(record.get("started") or 0) - 30
    end = float(record.get("finished") or record.get("started") or 0) + 60
    events = runner.events(start, end)
    path = reports.write_postmortem(record, events, Path(out_dir) if out_dir else None)
    console.print(str(path), soft_wrap=True, highlight=False, markup=False)  # a path a script may read
