"""``continuity drill approve`` and ``halt``: a steward's approval for a drill, and stopping a running one.

``approve`` signs an approval with the steward's operator key (see :mod:`continuity.stewardship`); ``halt``
writes a halt request the running drill's runner polls at every probe round (it then stops and runs its
rollbacks, see :mod:`continuity.drills.runner`).
"""

from __future__ import annotations

import time

import typer

from continuity import halt_auth, identity
from continuity.cli.approve import grant, stewardship
from continuity.cli.drill.common import load
from continuity.cli.output import console, emit_json
from continuity.errors import UsageError
from continuity.events import DRILL_HALT_REQUESTED
from continuity.failover.records import pulse_for
from continuity.redisd import connect
from continuity.state import drills as drill_state

commands = typer.Typer()


@commands.command("approve")
def approve(
    name: str = typer.Argument(..., help="Scenario to approve (see `continuity drill list`)."),
    for_: str | None = typer.Option(None, "--for", help="How long it holds, e.g. 1h (default 1h, at most the "
                                                        "group's max_validity)."),
    game_day: bool = typer.Option(False, "--game-day", help="Approve the scenario's game day (beat-run) instead "
                                                            "of a run by hand."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Approve a drill as a steward: a statement signed with your operator key, stored in Redis, in the pulse."""
    _bp, scenarios = load()
    scenarios.get(name)
    st = stewardship(scenarios.names())
    out = grant(connect(), st, "game-day" if game_day else "drill", name, for_)
    if as_json:
        emit_json(out)
        return
    left = out["expires"] - time.time()
    console.print(f"{out['subject']} approved by {out['steward']} (key {out['key_id']}) for {left / 60:.0f} min; "
                  f"{st.group} needs {st.required} distinct approval(s)", highlight=False, markup=False)


@commands.command("halt")
def halt(reason: str = typer.Option("", "--reason", help="Why (kept in the record, pulse and postmortem)."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Stop the running drill at its next probe round; its rollbacks run as at the end of any drill. Needs an
    operator key the fleet trusts: the request is signed, and the drill's record names the key that halted it."""
    key = identity.require_operator_key("a drill halt")  # the runner records who halted by this signature
    client = connect()
    drill_id = drill_state.lock_holder(client)
    if not drill_id or drill_id.startswith("recover-"):
        raise UsageError("no drill is running")
    who = identity.current().who
    body = halt_auth.sign(key, {"drill": drill_id, "who": who, "at": time.time(), "reason": reason})
    drill_state.request_halt(client, body)
    pulse_for(client).emit(DRILL_HALT_REQUESTED, data={"drill": drill_id, "who": who, "reason": reason,
                                                       "signer": key.key_id})
    if as_json:
        emit_json(body)
    else:
        console.print(f"halt requested for drill {drill_id}: it stops at its next probe round and runs its "
                      "rollbacks (follow with `continuity drill report`)", highlight=False, markup=False)
