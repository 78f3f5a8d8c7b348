"""``continuity failover switchover`` and ``failover``: move a role by hand.

Both check the service and node against the blueprint first (exit 2 before
anything touches Redis), then send the chain through :mod:`continuity.cli.launch`
and, by default, wait for its record.
"""

from __future__ import annotations

import typer

from continuity.cli import launch
from continuity.cli.failover.common import check_move, print_record, redis_errors
from continuity.cli.output import console, emit_json
from continuity.errors import ContinuityError, UsageError
from continuity.failover.records import operator

commands = typer.Typer()


def _finish(rid: str, wait: bool, timeout: float, as_json: bool) -> None:
    if not wait:
        if as_json:
            emit_json({"record": rid, "outcome": "running"})
        else:
            console.print(f"started: record {rid} (follow with `continuity failover history`)")
        return
    rec = launch.wait_record(rid, timeout)
    if as_json:
        emit_json(rec)
    else:
        print_record(rec or {"id": rid, "outcome": "unknown", "steps": []})
    if not rec or rec["outcome"] != "succeeded":
        outcome = rec["outcome"] if rec else "unknown"
        raise ContinuityError(f"record {rid}: outcome {outcome}"
                              + (" (still running at the deadline)" if outcome == "running" else ""))


@commands.command("switchover")
@redis_errors
def switchover(service: str = typer.Argument(..., help="Service to move."),
               to: str = typer.Option(..., "--to", help="Node to promote (a placement node of the service)."),
               wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the record to finish."),
               timeout: float = typer.Option(60.0, help="Seconds to wait."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Coordinated move of a healthy primary: demote it first, then promote NODE (never two primaries)."""
    check_move(service, to)
    _finish(launch.switchover(service, to, operator()), wait, timeout, as_json)


@commands.command("failover")
@redis_errors
def failover_cmd(service: str = typer.Argument(..., help="Service to move."),
                 to: str = typer.Option(..., "--to", help="Node to promote."),
                 force: bool = typer.Option(False, "--force", help="Required: the old primary is unreachable."),
                 wait: bool = typer.Option(True, "--wait/--no-wait"),
                 timeout: float = typer.Option(60.0, help="Seconds to wait."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Forced failover when the old primary cannot demote itself: waits out its lease + margin, fences, promotes."""
    check_move(service, to)
    if not force:
        raise UsageError("a forced failover needs --force (for a healthy primary use "
                         f"`continuity failover switchover {service} --to {to}`)")
    _finish(launch.force_failover(service, to, operator()), wait, timeout, as_json)
