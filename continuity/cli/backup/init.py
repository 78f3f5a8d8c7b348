"""``continuity backup init``: create a repository, optionally sharing chunking parameters with another one.

The only backup command that may open a second repository by URL through
:mod:`continuity.backup.api` (for ``--copy-params-from``), hence its own module.
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity import settings
from continuity.backup import crypto
from continuity.backup.api import open_repository
from continuity.backup.repository import Repository
from continuity.backup.storage import open_backend
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, RepoOpt, password, url
from continuity.cli.output import emit_json

commands = typer.Typer()


@commands.command("init")
def init(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
         copy_params_from: str | None = typer.Option(
             None, help="Share content-ID key and chunker seed with this repository so copy moves only new data."),
         from_password_file: Path | None = typer.Option(
             None, help=f"Password file for --copy-params-from (else ${settings.FROM_PASSWORD.name}, "
                        "else the same password)."),
         json_out: bool = JsonOpt) -> None:
    """Create a repository."""
    where = url(repo)
    pw = password(password_file)
    ring = crypto.Keyring.new()
    if copy_params_from:
        src_pw = (password(from_password_file, settings.FROM_PASSWORD)
                  if from_password_file or settings.FROM_PASSWORD.get() else pw)
        src = open_repository(copy_params_from, src_pw)
        ring.id_key, ring.chunker_seed = src.keyring.id_key, src.keyring.chunker_seed
    r = Repository.init(open_backend(where), pw, keyring=ring)
    if json_out:
        emit_json({"repository": where, "id": r.config["id"], "key": r.key_id})
    else:
        output.console.print(f"created repository {r.config['id'][:10]} at {where}")
