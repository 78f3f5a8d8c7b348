"""``continuity failover switchover`` and ``failover``: move a role by hand.

Both check the service and node against the blueprint first and need an
operator key (exit 2 before anything touches Redis), then send the chain through
:mod:`continuity.cli.launch` under the operator's mandate (every step checks it:
:mod:`continuity.failover.mandate`) and, by default, wait for its record.
"""

from __future__ import annotations

import typer

from continuity import identity
from continuity.cli import launch
from continuity.cli.failover.approve import check_forced
from continuity.cli.failover.common import check_move, print_record, redis_client, redis_errors
from continuity.cli.output import console, emit_json
from continuity.errors import ContinuityError, UsageError
from continuity.events import FAILOVER_FORCE_APPROVED
from continuity.failover.records import operator, pulse_for

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
    key = identity.require_operator_key("a switchover")
    _finish(launch.switchover(service, to, operator(), key), wait, timeout, as_json)


@commands.command("failover")
@redis_errors
def failover_cmd(service: str = typer.Argument(..., help="Service to move."),
                 to: str = typer.Option(..., "--to", help="Node to promote."),
                 force: bool = typer.Option(False, "--force", help="Required: the old primary is unreachable."),
                 wait: bool = typer.Option(True, "--wait/--no-wait"),
                 timeout: float = typer.Option(60.0, help="Seconds to wait."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Forced failover when the old primary cannot demote itself: waits out its lease + margin, fences, promotes.

    With stewards declared (ops/stewards.yml), it needs a second operator's `continuity failover approve SERVICE`."""
    check_move(service, to)
    if not force:
        raise UsageError("a forced failover needs --force (for a healthy primary use "
                         f"`continuity failover switchover {service} --to {to}`)")
    key = identity.require_operator_key("a forced failover")
    client = redis_client()
    approvals = check_forced(client, service)
    if approvals:
        pulse_for(client).emit(FAILOVER_FORCE_APPROVED, data={"who": operator(), "service": service,
                                                              "approvals": approvals})
    _finish(launch.force_failover(service, to, operator(), key), wait, timeout, as_json)
