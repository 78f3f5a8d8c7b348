"""`continuity pulse tail|verify|kinds`: read the fleet's event history, prove nobody edited it, list its kinds.

``tail`` prefers the Redis Stream (the whole fleet's events, live) and falls
back to this machine's history file when Redis is not configured or not
answering, because the moments an operator needs the history most are the
moments Redis may be down. ``verify`` checks the file's hash chain and its
signatures (see :mod:`continuity.pulse_trust` for whose keys count). ``kinds``
prints the event catalogue (``continuity/events.py``), so a script author
learns what ``tail --json`` can show without reading the source.

``tail`` lives in :mod:`continuity.cli.pulse_tail`, imported only when it runs:
it needs redis-py, which ``verify`` (run on a machine whose Redis is gone) does
not pay for.
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity import paths
from continuity.cli.lazy import LazyCommand, LazyGroup
from continuity.cli.output import emit_json
from continuity.errors import ContinuityError, UsageError
from continuity.events import KINDS, PREFIX, as_dict
from continuity.pulse import verify_file
from continuity.pulse_trust import Trust

COMMANDS: dict[str, LazyCommand] = {
    "tail": LazyCommand("pulse_tail", "Show the most recent pulse events, from the Redis Stream if reachable, else "
                                      "from the history file."),
}


class PulseGroup(LazyGroup):
    """``continuity pulse``: ``tail`` from :data:`COMMANDS` on first use, the commands below eagerly."""

    registry = COMMANDS


app = typer.Typer(help="Read and verify the pulse history; list its event kinds.", no_args_is_help=True, cls=PulseGroup)


@app.command()
def verify(
    file: Path | None = typer.Option(None, "--file",
                                     help="History file (default: the state dir's pulse_history.jsonl)."),
    trust: list[Path] = typer.Option([], "--trust", metavar="PUBKEY",
                                     help="Accept only signatures by the keys in this public-key file (a writer's "
                                          "keys/pulse-writer.ed25519.pub kept elsewhere); repeatable. Default: the "
                                          "history's own state dir keys."),
    hashes_only: bool = typer.Option(False, "--hashes-only",
                                     help="Check the hash chain only, not the signatures."),
    json_out: bool = typer.Option(False, "--json", help="Result as JSON on stdout."),
) -> None:
    """Check the hash chain and signatures: exit 0 if intact, 1 naming the first bad event (line, id, reason)."""
    path = file if file is not None else paths.pulse_file()
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, expected a pulse history file")
    if file is not None and not path.exists():
        raise UsageError(f"{path}: file not found")
    if trust and hashes_only:
        raise UsageError("--trust and --hashes-only exclude each other")
    result = verify_file(path, Trust.pinned(trust) if trust else None, signatures=not hashes_only)
    if result.ok and not path.exists() and not json_out:
        typer.echo(f"{path}: no pulse history yet (0 events)")
        return
    if json_out:
        emit_json({**result.as_dict(), "file": str(path)})
    if result.ok:
        if not json_out:
            signed = ("signatures not checked" if result.signers is None
                      else f"every event signed by {', '.join(result.signers)}" if result.signers else "")
            typer.echo(f"{path}: {result.count} events, chain intact" + (f", {signed}" if signed else ""))
        return
    if result.bad_line is None:
        raise ContinuityError(f"{path}: {result.reason}")
    event = f"event {result.bad_id}" if result.bad_id else "event ?"
    raise ContinuityError(f"{path}:{result.bad_line}: {event}: {result.reason} "
                          f"({result.count} events verified before it)")


@app.command()
def kinds(
    json_out: bool = typer.Option(False, "--json", help="The catalogue as a JSON array."),
    kind: str | None = typer.Option(None, "--kind", help="Only kinds starting with this (e.g. failover, drill.)."),
) -> None:
    """List every pulse event kind: what it means, who emits it, and the fields of its data."""
    short = kind[len(PREFIX):] if kind and kind.startswith(PREFIX) else (kind or "")
    chosen = [k for name, k in KINDS.items() if name.startswith(short)]
    if json_out:
        emit_json([as_dict(k) for k in chosen])
        return
    for k in chosen:
        typer.echo(f"{k.name}  {k.description}")
        typer.echo(f"    emitted by {k.emitter}" + (f"; reserved: {k.reserved}" if k.reserved else ""))
        for f in k.fields:
            typer.echo(f"    {f.name} ({f.type}): {f.meaning}")
        if k.extra:
            typer.echo(f"    ... and {k.extra}")
