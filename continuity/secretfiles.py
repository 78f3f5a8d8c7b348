"""Generated credentials of the embedded fleet, each in its own 0600 file under ``<state>/keys``.

``continuity up`` makes the Redis password, Flower's basic-auth pair and the backup password the first time
and reuses them after, so a restarted fleet (and an operator's second terminal) finds the same ones. A file is
created ``O_EXCL`` with mode 0600 in a 0700 directory: two processes racing get the same value, and nobody
else on the machine can read it. The values go to child processes in their environment, never in argv
(``ps`` shows argv to every user).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from continuity import paths


def keys_dir() -> Path:
    return paths.state_dir() / "keys"


def ensure(name: str, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> str:
    """The value in ``<state>/keys/<name>``, created (0600, never overwritten) when absent."""
    path = keys_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(make() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path.read_text(encoding="utf-8").strip()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (a URL holding a password, say)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
