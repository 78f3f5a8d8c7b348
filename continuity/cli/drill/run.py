"""``continuity drill run`` and ``recover``: inject a fault for real (or plan it), and finish pending rollbacks.

Both drive :class:`continuity.drills.runner.Runner` against the fleet's Redis
under the one-drill-at-a-time lock.
"""

from __future__ import annotations

import time
from typing import Any

import typer

from continuity.cli.drill.common import dur, load, print_record
from continuity.cli.output import console, emit_json
from continuity.drills.runner import Runner, acquire_lock, release_lock
from continuity.errors import ContinuityError, ExitCode, UsageError
from continuity.redisd import connect
from continuity.state import drills as drill_state

commands = typer.Typer()


@commands.command("run")
def run(
    name: str = typer.Argument(..., help="Scenario name (see `continuity drill list`)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve targets and print the plan; touch nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Run one drill: guards, steady state, inject, observe, rollback, re-check, measure, record."""
    bp, scenarios = load()
    scenarios.get(name)
    runner = Runner(connect(), bp, scenarios,
                    progress=None if as_json else lambda phase, info: console.print(f"[dim]{phase}[/dim]"))
    result = runner.run(name, dry_run=dry_run)
    if as_json:
        emit_json(result)
    elif dry_run:
        _print_plan(result)
    else:
        print_record(result)
    if dry_run:
        if result.get("refusal"):
            raise UsageError(result["refusal"])
        return
    if result.get("status") != "passed":
        raise typer.Exit(int(ExitCode.FAILED))


def _print_plan(plan: dict[str, Any]) -> None:
    t = plan["target"]
    console.print(f"[bold]{plan['scenario']}[/bold] — {plan['title']} (dry run: nothing touched)")
    console.print(f"  environment {plan['environment']} (allowed: {', '.join(plan['allowed_environments'])})")
    console.print(f"  target: {t['kind']} nodes={t['nodes']} services={t['services']}")
    fault = plan["fault"]
    action = fault.get("action") or fault.get("error")
    console.print(f"  fault: {fault['type']} {fault.get('params') or ''} -> {action}")
    for r in plan.get("rollbacks") or []:
        console.print(f"  rollback: {r}")
    console.print(f"  duration {dur(plan['duration'])}; steady state: {', '.join(plan['steady_state'])}")
    console.print(f"  expectations: {plan['expectations']}")
    if plan.get("refusal"):
        console.print(f"  [red]would be refused:[/red] {plan['refusal']}")


@commands.command("recover")
def recover(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Finish rollbacks left pending by a crashed or failed drill (every `drill run` also does this first)."""
    bp, scenarios = load()
    client = connect()
    runner = Runner(client, bp, scenarios)
    token = f"recover-{time.time():.0f}"
    if not acquire_lock(client, token):
        held = drill_state.lock_holder(client) or "?"
        raise UsageError(f"a drill is running ({held}); recover after it ends")
    try:
        out = runner.recover()
    finally:
        release_lock(client, token)
    if as_json:
        emit_json(out)
    else:
        for o in out:
            console.print(f"{o['drill']}: {'completed' if o['ok'] else 'FAILED'} {o['ran']} {o['errors']}")
        if not out:
            console.print("no pending rollbacks")
    if any(not o["ok"] for o in out):
        raise ContinuityError("some rollbacks are still failing: " +
                              "; ".join(e for o in out for e in o["errors"]))
