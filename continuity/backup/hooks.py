"""A set's ``before``/``after`` hooks around its snapshot: quiesce first, always undo after.

Why this order: ``before`` hooks run in the order written; the first one that
fails with ``on_failure: abort`` stops the rest and no snapshot is taken.
``after`` hooks run whenever a ``before`` hook has run, whatever happened
next, like a ``finally``: they typically undo what a ``before`` hook did
(unfreeze a file system, resume writes), and a dump left paused because the
snapshot failed is worse than the failed snapshot. They learn the outcome from
their environment (names without the ``CONTINUITY_`` prefix, which is kept for
the variables continuity itself reads, see :mod:`continuity.settings`):

* ``BACKUP_SET`` — the set's name; ``BACKUP_HOOK`` — ``before`` or ``after``;
* ``BACKUP_RESULT`` (after) — ``saved``, ``failed`` or ``skipped``
  (a before hook aborted);
* ``BACKUP_SNAPSHOT_ID`` (after) — the saved snapshot's id, empty otherwise.

A hook failing with ``on_failure: continue`` is reported in the summary's
``warnings`` and changes nothing else. An ``after`` hook failing with
``abort`` fails the run (exit 1) although the snapshot stays saved: whatever
it should have undone still needs a person.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from continuity.backup import commands


class Hook(Protocol):
    command: list[str]
    timeout: float
    on_failure: str


class HookFailed(commands.CommandFailed):
    """A hook with ``on_failure: abort`` failed (exit 1)."""


def run_phase(phase: str, hooks: Sequence[Hook], env: dict[str, str], cwd: str | None,
              ran: list[tuple[str, Hook, commands.Outcome]]) -> str | None:
    """Run one phase's hooks in order; returns why an aborting hook failed (the rest are then not run)."""
    for hook in hooks:
        outcome = commands.run(hook.command, hook.timeout, env={**env, "BACKUP_HOOK": phase}, cwd=cwd)
        ran.append((phase, hook, outcome))
        if not outcome.ok and hook.on_failure == "abort":
            return f"{phase} hook {outcome.describe()}"
    return None


def around(set_name: str, before: Sequence[Hook], after: Sequence[Hook], cwd: str | None,
           snapshot: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``snapshot`` between the set's hooks; the summary gains ``hooks`` and hook ``warnings``."""
    if not before and not after:
        return snapshot()
    env = {"BACKUP_SET": set_name}
    ran: list[tuple[str, Hook, commands.Outcome]] = []
    aborted = run_phase("before", before, env, cwd, ran)
    summary: dict[str, Any] | None = None
    failure: BaseException | None = None
    if aborted is None:
        try:
            summary = snapshot()
        except BaseException as exc:  # after hooks still run; the snapshot's own error is what is raised
            failure = exc
    result = "skipped" if aborted else ("failed" if summary is None else "saved")
    after_env = {**env, "BACKUP_RESULT": result,
                 "BACKUP_SNAPSHOT_ID": str(summary.get("id", "")) if summary else ""}
    after_abort = run_phase("after", after, after_env, cwd, ran)
    if failure is not None:
        raise failure
    if aborted is not None:
        tail = f" (after hooks: {after_abort})" if after_abort else ""
        raise HookFailed(f"set {set_name}: {aborted}; no snapshot taken{tail}")
    assert summary is not None
    if after_abort is not None:
        raise HookFailed(f"set {set_name}: snapshot {str(summary.get('id'))[:8]} saved, but {after_abort}")
    summary["hooks"] = [{"phase": phase, "on_failure": hook.on_failure, **out.as_dict()} for phase, hook, out in ran]
    summary["warnings"] = [*summary.get("warnings", []),
                           *(f"{phase} hook {out.describe()} (on_failure: continue)"
                             for phase, _, out in ran if not out.ok)]
    return summary
