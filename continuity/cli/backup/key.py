"""``continuity backup key list|add|remove|rotate``: the passwords that open a repository, and its data key.

All four only open the repository, so they share one module (and are a
plain, eager group).
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity import settings
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, RepoOpt, open_repo, password
from continuity.cli.output import emit_json

app = typer.Typer(help="Manage the passwords that open a repository, and rotate its data key.",
                  no_args_is_help=True)


@app.command("list")
def key_list(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt, json_out: bool = JsonOpt) -> None:
    """List key files (passwords) of the repository."""
    r = open_repo(repo, password_file)
    keys = r.list_keys()
    if json_out:
        emit_json({"keys": keys, "data_key": f"{r.keyring.current:08x}",
                   "data_keys": len(r.keyring.data_keys)})
        return
    for k in keys:
        mark = "*" if k.get("current") else " "
        what = (f"refused: {k['refused']}" if k.get("refused") else "damaged (not a key file)" if k.get("damaged")
                else f"{k.get('username')}@{k.get('hostname')}" + ("  append-only" if k.get("append_only") else ""))
        output.console.print(f"{mark} {k['id'][:8]}  {what}", markup=False, soft_wrap=True)
    output.console.print(f"current data key {r.keyring.current:08x} ({len(r.keyring.data_keys)} in keyring)")


@app.command("add")
def key_add(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
            new_password_file: Path | None = typer.Option(
                None, help=f"Else ${settings.NEW_PASSWORD.name}."),
            append_only: bool = typer.Option(
                False, "--append-only",
                help="A credential for backup hosts: adds snapshots, never forgets, prunes or overwrites.")) -> None:
    """Add a password that opens the repository."""
    r = open_repo(repo, password_file)
    kid = r.add_key(password(new_password_file, settings.NEW_PASSWORD, "new password"), append_only=append_only)
    output.console.print(f"added {'append-only ' if append_only else ''}key {kid[:8]}")


@app.command("remove")
def key_remove(key_id: str = typer.Argument(...), repo: str | None = RepoOpt,
               password_file: Path | None = PwFileOpt) -> None:
    """Remove a key file (not the one used to open the repository)."""
    open_repo(repo, password_file).remove_key(key_id)
    output.console.print(f"removed key {key_id[:8]}")


@app.command("rotate")
def key_rotate(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt) -> None:
    """Start a new data key for new writes; data under older keys stays readable."""
    kid = open_repo(repo, password_file).rotate()
    output.console.print(f"new data key {kid:08x}")
