"""``continuity failover pause`` and ``resume``: maintenance windows for automatic failover."""

from __future__ import annotations

import time

import typer

from continuity import identity
from continuity.cli.failover.common import blueprint, check_service, redis_client, redis_errors, when
from continuity.cli.output import console, emit_json
from continuity.failover import control
from continuity.failover.records import operator

commands = typer.Typer()


@commands.command("pause")
@redis_errors
def pause(service: str | None = typer.Argument(None, help="Service to pause; all services when omitted."),
          reason: str = typer.Option("", help="Why (shown in status and history)."),
          for_: str | None = typer.Option(None, "--for", help="Declared length, e.g. 30m or 2h: past it the pause "
                                                              "no longer blocks failover (and is alerted on)."),
          until: str | None = typer.Option(None, "--until", help="Declared end, e.g. 2025-06-01T18:00 (UTC "
                                                                 "unless a zone is given)."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Maintenance: no automatic failover for SERVICE (or the whole fleet) until `resume`. Needs an operator key:
    the note is signed with it, and the detector ignores pauses no trusted operator signed."""
    now = time.time()
    expiry = control.pause_expiry(for_, until, now)
    bp = blueprint()
    check_service(bp, service)
    key = identity.require_operator_key("a pause")  # the detector honours only operator-signed pauses
    body = control.pause(redis_client(), service, operator(), reason, now=now, until=expiry, operator=key)
    if as_json:
        emit_json(body)
    else:
        ends = f" until {when(expiry)} UTC" if expiry is not None else " until `continuity failover resume`"
        console.print(f"automatic failover paused for {service or 'the whole fleet'} by {body['who']}{ends}",
                      highlight=False)


@commands.command("resume")
@redis_errors
def resume(service: str | None = typer.Argument(None, help="Service to resume; the global pause when omitted."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """End a maintenance pause. Needs an operator key: the resume is signed with it, and the detector keeps
    honouring a signed pause whose note was deleted without a signed resume."""
    bp = blueprint()
    check_service(bp, service)
    key = identity.require_operator_key("a resume")
    who = operator()
    was = control.resume(redis_client(), service, who, operator=key)
    if as_json:
        emit_json({"service": service, "who": who, "was_paused": was})
    else:
        scope = service or "the whole fleet"
        console.print(f"automatic failover resumed for {scope}" if was else f"{scope} was not paused")
