"""``continuity failover pause`` and ``resume``: maintenance windows for automatic failover."""

from __future__ import annotations

import typer

from continuity.cli.failover.common import blueprint, check_service, redis_client, redis_errors
from continuity.cli.output import console, emit_json
from continuity.failover import control
from continuity.failover.records import operator

commands = typer.Typer()


@commands.command("pause")
@redis_errors
def pause(service: str | None = typer.Argument(None, help="Service to pause; all services when omitted."),
          reason: str = typer.Option("", help="Why (shown in status and history)."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Maintenance: no automatic failover for SERVICE (or the whole fleet) until `resume`."""
    bp = blueprint()
    check_service(bp, service)
    body = control.pause(redis_client(), service, operator(), reason)
    if as_json:
        emit_json(body)
    else:
        console.print(f"automatic failover paused for {service or 'the whole fleet'} by {body['who']}")


@commands.command("resume")
@redis_errors
def resume(service: str | None = typer.Argument(None, help="Service to resume; the global pause when omitted."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """End a maintenance pause."""
    bp = blueprint()
    check_service(bp, service)
    who = operator()
    was = control.resume(redis_client(), service, who)
    if as_json:
        emit_json({"service": service, "who": who, "was_paused": was})
    else:
        scope = service or "the whole fleet"
        console.print(f"automatic failover resumed for {scope}" if was else f"{scope} was not paused")
