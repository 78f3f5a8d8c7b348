"""``continuity drill run`` and ``recover``: inject a fault for real (or plan it), and finish pending rollbacks.

Both drive :class:`continuity.drills.runner.Runner` against the fleet's Redis
under the one-drill-at-a-time lock.
"""

from __future__ import annotations

import time
from typing import Any

import typer

from continuity import text
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


ROLLBACK_KEYS = ("name", "node", "service", "path", "set", "repository")


def _print_plan(plan: dict[str, Any]) -> None:
    """The dry run for a person: what would be hit, how, what must hold, and whether the guards would let it."""
    t = plan["target"]
    out = [f"{plan['scenario']} — {plan['title']} (dry run: nothing touched)",
           f"  environment {plan['environment']} (allowed: {', '.join(plan['allowed_environments'])})",
           f"  target: {t['kind']}; nodes {text.plain(t['nodes'])}; services {text.plain(t['services'])}"]
    fault = plan["fault"]
    action = fault.get("action") or f"cannot be prepared: {fault.get('error')}"
    params = f" ({text.plain(fault['params'])})" if fault.get("params") else ""
    out.append(f"  fault: {fault['type']}{params} — {action}")
    for r in plan.get("rollbacks") or []:
        where = " ".join(f"{k} {text.plain(r[k])}" for k in ROLLBACK_KEYS if r.get(k) is not None)
        out.append(f"  rollback: {r.get('kind')} {where}".rstrip())
    out.append(f"  duration {dur(plan['duration'])}; steady state: {', '.join(plan['steady_state'])}")
    e = plan["expectations"]
    out.append("  expectations: " + ", ".join(
        [f"RTO ≤ {dur(e['rto'])}" if e.get("rto") is not None else "RTO —",
         f"RPO ≤ {dur(e['rpo'])}" if e.get("rpo") is not None else "RPO —",
         f"detection ≤ {dur(e['detection'])}" if e.get("detection") is not None else "detection —",
         f"acknowledged writes lost ≤ {text.plain(e.get('data_lost'))}", f"failovers {e.get('failovers')}",
         f"integrity checked: {text.plain(e.get('integrity'))}"]))
    for line in out:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if plan.get("refusal"):
        console.print(f"  would be refused: {plan['refusal']}", style="red", markup=False, highlight=False,
                      soft_wrap=True)
    else:
        console.print("  the guards would let it run", style="green", markup=False, highlight=False)


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
        elsewhere = runner.registry.elsewhere()
        if elsewhere:  # Redis lists them, no file here: another host's to run (or planted), never run from Redis
            console.print(f"pending on other hosts (run `continuity drill recover` there): {', '.join(elsewhere)}",
                          markup=False, highlight=False)
    if any(not o["ok"] for o in out):
        raise ContinuityError("some rollbacks are still failing: " +
                              "; ".join(e for o in out for e in o["errors"]))
