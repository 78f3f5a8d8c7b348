"""``continuity failover history`` and ``show``: the failover records, which never expire."""

from __future__ import annotations

import typer

from continuity.cli.failover.common import (
    blueprint,
    check_service,
    print_record,
    redis_client,
    redis_errors,
    secs,
    when,
)
from continuity.cli.output import console, emit_json
from continuity.errors import UsageError
from continuity.failover import records

commands = typer.Typer()


@commands.command("history")
@redis_errors
def history(as_json: bool = typer.Option(False, "--json"),
            limit: int = typer.Option(20, min=1, help="Newest N records."),
            service: str | None = typer.Option(None, help="Only this service.")) -> None:
    """Every failover and switchover, newest first: when, who, why, from → to, outcome, timings."""
    bp = blueprint()
    check_service(bp, service)
    recs = records.history(redis_client(), limit=limit, service=service)
    if as_json:
        emit_json(recs)
        return
    if not recs:
        console.print("no failover records yet")
    for r in recs:  # one line per record: greppable, never truncated by the terminal width
        console.print(f"{when(r['started'])}  {r['service']}  {r['kind']}  {r.get('old_primary') or '-'} -> "
                      f"{r.get('new_primary') or r.get('candidate') or '-'}  {r['outcome']}  by {r.get('who') or '-'}"
                      f"  detection {secs(r.get('detection'))}  recovery {secs(r.get('mttr'))}  id {r['id']}",
                      soft_wrap=True, highlight=False)


@commands.command("show")
@redis_errors
def show(record_id: str = typer.Argument(..., help="Record id from `history`."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """One record with every step's node, duration and outcome."""
    rec = records.get_record(redis_client(), record_id)
    if rec is None:
        raise UsageError(f"no failover record {record_id!r} (see `continuity failover history`)")
    if as_json:
        emit_json(rec)
    else:
        print_record(rec)
