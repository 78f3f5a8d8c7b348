"""`continuity drill list|run|report|recover|postmortem|approve|halt|action`: rehearse failures, learn from them.

One module per cluster of commands with the same imports, imported only when
one of them runs: ``drill list`` reads the scenarios file and needs neither
Redis nor the drill runner.
"""

from __future__ import annotations

import typer

from continuity.cli.lazy import LazyCommand, LazyGroup

COMMANDS: dict[str, LazyCommand] = {
    "list": LazyCommand("drill.listing", "Scenarios in ops/drills/continuity_scenarios.yaml with their target, fault "
                                         "and environments."),
    "run": LazyCommand("drill.run", "Run one drill: guards, steady state, inject, observe, rollback, re-check, "
                                    "measure, record."),
    "report": LazyCommand("drill.records", "A drill's record (metrics, expectations, postmortem path), or the list of "
                                           "recent drills."),
    "recover": LazyCommand("drill.run", "Finish rollbacks left pending by a crashed or failed drill (every `drill "
                                        "run` also does this first)."),
    "postmortem": LazyCommand("drill.records", "(Re)render the draft postmortem of a drill or of a real failover, "
                                               "timeline from the pulse history."),
    "approve": LazyCommand("drill.steward", "Approve a drill as a steward: a statement signed with your operator "
                                            "key, stored in Redis, in the pulse."),
    "action": LazyCommand("drill.actions", "Postmortem action items: add one (owner, due date), approve or close it, "
                                           "list them."),
    "halt": LazyCommand("drill.steward", "Stop the running drill at its next probe round; its rollbacks run as at "
                                         "the end of any drill. Needs an operator key the fleet trusts: the request "
                                         "is signed, and the drill's record names the key that halted it."),
}


class DrillGroup(LazyGroup):
    """``continuity drill``: every command of :data:`COMMANDS`, imported only when used."""

    registry = COMMANDS


app = typer.Typer(help="Chaos drills: list scenarios, run one (or plan it with --dry-run), read reports.",
                  no_args_is_help=True, cls=DrillGroup)
