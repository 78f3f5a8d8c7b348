"""What every ``continuity backup`` command shares: the repository options, the password, opening a repository.

Opening goes straight to :mod:`continuity.backup.repository` and
:mod:`continuity.backup.storage`, not via :mod:`continuity.backup.api`: that
imports every engine module and the pydantic config schema, while most
commands need only the repository.
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity import settings
from continuity.backup.repository import Repository
from continuity.backup.storage import open_backend
from continuity.backup.throttle import Limits, throttled
from continuity.errors import UsageError

RepoOpt = typer.Option(None, "--repo", "-r", envvar=settings.REPOSITORY.name,
                       help="Repository: a path or s3://bucket/prefix.")
PwFileOpt = typer.Option(None, "--password-file", envvar=settings.PASSWORD_FILE.name,
                         help=f"File whose first line is the password (else ${settings.PASSWORD.name}).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")
LimitUpOpt = typer.Option(None, "--limit-upload", metavar="KiB/s", min=0,
                          help="Limit writes to the repository to this many KiB/s (restic's unit; 0: unlimited).")
LimitDownOpt = typer.Option(None, "--limit-download", metavar="KiB/s", min=0,
                            help="Limit reads from the repository to this many KiB/s (restic's unit; 0: unlimited).")


def password(password_file: Path | None, env: settings.Setting[str | None] = settings.PASSWORD,
             what: str = "password") -> bytes:
    """The first line of ``password_file``, else ``$env``; a usage error (exit 2) when neither gives one."""
    if password_file is not None:
        try:
            lines = password_file.read_bytes().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read {what} file {password_file}: {exc.strerror}") from None
        if not lines or not lines[0]:
            raise UsageError(f"{what} file {password_file} is empty")
        return lines[0]
    value = env.get()
    if not value:
        raise UsageError(f"no {what}: set ${env.name} or pass --password-file")
    return value.encode()


def url(repo: str | None) -> str:
    """The repository URL from --repo / the repository variable; a usage error when missing."""
    if not repo:
        raise UsageError(f"no repository: pass --repo or set ${settings.REPOSITORY.name}")
    return repo


def open_repo(repo: str | None, password_file: Path | None, limit_upload: int | None = None,
              limit_download: int | None = None) -> Repository:
    """Open the repository with the password (exit 10 missing, 12 wrong key: raised by the engine), its
    transfers held to ``--limit-upload`` / ``--limit-download`` (KiB/s) when given."""
    backend = throttled(open_backend(url(repo)), Limits.from_kib(limit_upload, limit_download))
    return Repository.open(backend, password(password_file))


def fmt_bytes(n: float) -> str:
    """Human sizes in binary units, as restic prints them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)
