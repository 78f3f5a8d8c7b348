"""``continuity failover resolve``: close an incident once a human has dealt with it.

An escalated failover or a failover storm opens an incident; while one is open no drill runs (invariant 6)
and status shows it in red. Until now only a forced failover closed one. Closing is an operator's act, so
it is recorded with who and why (``failover.incident_resolved`` in the pulse history).
"""

from __future__ import annotations

import typer

from continuity.cli.failover.common import redis_client, redis_errors
from continuity.cli.output import console, emit_json
from continuity.errors import UsageError
from continuity.events import FAILOVER_INCIDENT_RESOLVED
from continuity.failover.records import operator, pulse_for
from continuity.state import incidents

commands = typer.Typer()


@commands.command("resolve")
@redis_errors
def resolve(ids: list[str] = typer.Argument(None, help="Incident ids as `failover status` shows them, or service "
                                                       "names (their `failover-SERVICE` incident)."),
            all_: bool = typer.Option(False, "--all", help="Close every open incident."),
            note: str = typer.Option("", "--note", help="What was done (kept in the pulse history)."),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Close open incidents (escalated failover, failover storm) once handled; drills may run again."""
    client = redis_client()
    open_ = incidents.read_all(client)
    if all_:
        wanted = sorted(open_)
    elif ids:
        wanted = [i if i in open_ else f"failover-{i}" for i in ids]
        unknown = [ids[n] for n, i in enumerate(wanted) if i not in open_]
        if unknown:
            raise UsageError(f"no open incident {', '.join(map(repr, unknown))}; open: "
                             f"{', '.join(sorted(open_)) or 'none'}")
    else:
        raise UsageError("name the incidents to close (see `continuity failover status`), or pass --all")
    who = operator()
    closed = []
    for iid in wanted:
        if incidents.close(client, iid):
            pulse_for(client).emit(FAILOVER_INCIDENT_RESOLVED, service=open_[iid].get("service"),
                                   data={"who": who, "id": iid, "note": note, "incident": open_[iid]})
            closed.append(iid)
    if as_json:
        emit_json({"closed": closed, "who": who})
    elif closed:
        console.print(f"closed {', '.join(closed)} (by {who})", highlight=False, markup=False)
    else:
        console.print("no open incident", highlight=False)
