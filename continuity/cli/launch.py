"""The one door from the command line to Celery: start its processes, send it tasks.

The CLI is an imperative shell like ``workers/``, but most commands (backup,
status, history, drills) never touch Celery, and importing it (with kombu and
the ``workers`` task modules) would add a few hundred milliseconds to each of
them and tie them to the Celery app's configuration. So no other CLI module
imports ``workers``, ``beat_schedule`` or celery (``tests/unit/test_layering.py``
enforces it), and every function here imports what it needs when it is called.
Apart from :mod:`continuity.cli.output` deferring rich, these are the only
imports inside functions in ``continuity/cli/``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from continuity.blueprint import Blueprint  # every caller has loaded it already: no start-up cost
from continuity.signing import SigningKey

CELERY_APP = "workers.app"  # what ``celery -A`` loads in the processes started below
BEAT_SCHEDULER = "workers.beat:ContinuityScheduler"  # beat's scheduler class, loaded by ``celery beat -S``


def exec_celery(args: list[str], env: dict[str, str]) -> None:
    """Replace this process with ``celery -A workers.app ARGS`` (a worker or beat) with ``env`` added.

    The CLI itself imports nothing of Celery for this: the new interpreter does.
    """
    os.environ.update(env)
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", CELERY_APP, *args])


def check_beat_schedule(bp: Blueprint) -> None:
    """Build beat's schedule once, so a bad ops/ configuration exits 2 here rather than inside beat."""
    # why: beat_schedule collects entries from the workers modules, i.e. imports Celery; only `beat` needs it
    import beat_schedule

    beat_schedule.build_schedule(bp)


def switchover(service: str, target: str, who: str, operator: SigningKey) -> str:
    """Send a coordinated switchover of ``service`` to ``target`` under ``operator``'s mandate; the record id."""
    # why: sending a task imports the Celery app and its task modules; only this command pays for that
    from workers.failover import switchover as send_switchover

    return send_switchover(service, target, who, operator=operator)


def force_failover(service: str, target: str, who: str, operator: SigningKey) -> str:
    """Send a forced failover of ``service`` to ``target`` under ``operator``'s mandate; the record id."""
    # why: as switchover, only the command that sends the task imports Celery
    from workers.failover import force_failover as send_force_failover

    return send_force_failover(service, target, who, operator=operator)


def wait_record(rid: str, timeout: float) -> dict[str, Any] | None:
    """Wait up to ``timeout`` seconds for failover record ``rid`` to finish; None if it never appeared."""
    # why: the record is polled by the code that sent the task, which lives with it in workers.failover
    from workers.failover import wait_record as wait

    return wait(rid, timeout)
