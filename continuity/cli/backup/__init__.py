"""`continuity backup ...`: restic-style commands over the backup engine.

Usable standalone (``--repo`` / ``CONTINUITY_REPOSITORY``, password from
``CONTINUITY_PASSWORD`` or ``--password-file``) so it can be compared with
restic on the same data, and with restic's exit codes so scripts carry over.
All work happens in :mod:`continuity.backup`; these modules only parse, print
and map outcomes to exit codes.

One module per command (or per pair sharing their imports), imported only when
that command runs: ``backup list`` in a script's loop opens a repository and
prints JSON, and must not pay for the snapshot engine, the pydantic backup-set
schema (``continuity.backup.api``) or rich.
"""

from __future__ import annotations

import typer

from continuity.cli.lazy import LazyCommand, LazyGroup

COMMANDS: dict[str, LazyCommand] = {
    "init": LazyCommand("backup.init", "Create a repository."),
    "snapshot": LazyCommand("backup.snapshot", "Take a snapshot of PATHS (and --sqlite / --ledger sources, or a "
                                               "command's output), or of a configured --set."),
    "list": LazyCommand("backup.listing", "List snapshots (damaged snapshot records are reported, never hidden)."),
    "snapshots": LazyCommand("backup.listing", "List snapshots (damaged snapshot records are reported, never "
                                               "hidden)."),
    "restore": LazyCommand("backup.restore", "Restore a snapshot (or chosen paths) into --target; every byte is "
                                             "verified. --seq/--at: point in time."),
    "log": LazyCommand("backup.log", "Show the shipped ledger log (what a --seq/--at restore can reach), per set and "
                                     "ledger."),
    "verify": LazyCommand("backup.verify", "Check the repository; exit 1 naming every damaged snapshot and file."),
    "forget": LazyCommand("backup.retention", "Remove snapshots not kept by the policy (per backup set / "
                                              "host+paths group)."),
    "prune": LazyCommand("backup.retention", "Remove data no snapshot references (takes the exclusive lock)."),
    "copy": LazyCommand("backup.replicate", "Copy snapshots to another repository, moving only data it lacks."),
    "unlock": LazyCommand("backup.unlock", "Remove stale locks (dead process on this host, or not refreshed for 30 "
                                           "minutes)."),
    "load-redis": LazyCommand("backup.redis", "Load a Redis RDB into a data directory the fleet's redis-server "
                                              "starts on (stop the fleet first)."),
    "key": LazyCommand("backup.key", "Manage the passwords that open a repository, and rotate its data key."),
}


class BackupGroup(LazyGroup):
    """``continuity backup``: every command of :data:`COMMANDS`, imported only when used."""

    registry = COMMANDS


app = typer.Typer(help="Encrypted, deduplicated snapshots with restore drills (restic-style).",
                  no_args_is_help=True, cls=BackupGroup)
