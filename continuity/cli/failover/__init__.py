"""`continuity failover ...`: see where every role is, move one by hand, pause automation, read the history.

Verbs follow patronictl (status, switchover, failover, pause, resume, history)
because operators already know them: a *switchover* is coordinated (the old
primary demotes itself first), a *failover* is forced (the old primary is
unreachable; we still wait out its lease). Every action is recorded with the
operator's user@host in the pulse history.

One module per cluster of commands with the same imports, imported only when
one of them runs; only :mod:`continuity.cli.failover.move` sends tasks, through
:mod:`continuity.cli.launch`.
"""

from __future__ import annotations

import typer

from continuity.cli.lazy import LazyCommand, LazyGroup

COMMANDS: dict[str, LazyCommand] = {
    "status": LazyCommand("failover.status", "Where every role is: primary, epoch, lease, route, pause and "
                                             "cool-down, last failover."),
    "switchover": LazyCommand("failover.move", "Coordinated move of a healthy primary: demote it first, then "
                                               "promote NODE (never two primaries)."),
    "failover": LazyCommand("failover.move", "Forced failover when the old primary cannot demote itself: waits "
                                             "out its lease + margin, fences, promotes."),
    "approve": LazyCommand("failover.approve", "Approve, as a second operator, a forced failover of SERVICE (signed "
                                               "with your operator key)."),
    "pause": LazyCommand("failover.pause", "Maintenance: no automatic failover for SERVICE (or the whole fleet) "
                                           "until `resume`. Needs an operator key: the note is signed with it, and "
                                           "the detector ignores pauses no trusted operator signed."),
    "resume": LazyCommand("failover.pause", "End a maintenance pause. Needs an operator key: the resume is signed "
                                            "with it, and the detector keeps honouring a signed pause whose note "
                                            "was deleted without a signed resume."),
    "history": LazyCommand("failover.history", "Every failover and switchover, newest first: when, who, why, from "
                                               "→ to, outcome, timings."),
    "show": LazyCommand("failover.history", "One record with every step's node, duration and outcome."),
    "resolve": LazyCommand("failover.incident", "Close open incidents (escalated failover, failover storm) once "
                                                "handled; drills may run again."),
}


class FailoverGroup(LazyGroup):
    """``continuity failover``: every command of :data:`COMMANDS`, imported only when used."""

    registry = COMMANDS


app = typer.Typer(help="Failover: status, switchover, forced failover, maintenance pause, history.",
                  no_args_is_help=True, cls=FailoverGroup)
