"""Keep secrets out of what is stored where others read it (Redis, the pulse history), by *value*.

Matching variable names (``*PASS*``, ``*TOKEN*``…) missed ``CONTINUITY_REDIS_URL=redis://:pw@…``,
``FLOWER_BASIC_AUTH=admin:pw`` and ``DATABASE_URL``: a secret does not announce itself in its name. So we
collect the secret *values* this process can know of and look for them anywhere in what is about to be stored:

- every variable the settings table marks secret (:func:`continuity.settings.is_secret`);
- the password part of any URL with credentials (``scheme://user:password@host``) in the environment;
- Flower's ``user:password`` pairs (``FLOWER_BASIC_AUTH``);
- the generated credential files under ``<state>/keys`` (:mod:`continuity.secretfiles`: Redis password,
  Flower's pair, backup password) and heartbeat key files.

Anything containing one of them is dropped (:func:`redact_env`) or masked (:func:`scrub`). Values shorter than
:data:`MIN_LEN` are not treated as secrets (``1`` or ``true`` would mask half of every event).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from continuity import paths, settings

MIN_LEN = 6
MASK = "***"
_URL_AUTH = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://([^/@\s:]*):([^/@\s]+)@")
_SECRET_FILES_MAX = 4096  # a credential file is small; anything larger is not one of ours

_file_cache: dict[str, tuple[float, frozenset[str]]] = {}


def _from_value(name: str, value: str) -> set[str]:
    found: set[str] = set()
    if not value:
        return found
    if settings.is_secret(name):
        found.add(value)
    for _user, password in _URL_AUTH.findall(value):
        found.add(password)
    if name == "FLOWER_BASIC_AUTH":
        for pair in value.split(","):
            found.add(pair)
            found.add(pair.partition(":")[2])
    return found


def _from_files() -> frozenset[str]:
    """Values of the credential files in ``<state>/keys`` (cached until the directory changes)."""
    d = paths.state_dir() / "keys"
    try:
        mtime = d.stat().st_mtime
    except OSError:
        return frozenset()
    cached = _file_cache.get(str(d))
    if cached is not None and cached[0] == mtime:
        return cached[1]
    found: set[str] = set()
    try:
        entries = list(os.scandir(d))
    except OSError:
        entries = []
    for e in entries:
        if e.name.endswith(".pub") or not e.is_file(follow_symlinks=False):
            continue
        try:
            if e.stat().st_size > _SECRET_FILES_MAX:
                continue
            text = open(e.path, encoding="utf-8").read()  # noqa: SIM115 - small file, closed at once
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "-----")):
                found.add(line)
                if ":" in line and e.name.startswith("flower"):
                    found.add(line.partition(":")[2])
    frozen = frozenset(found)
    _file_cache[str(d)] = (mtime, frozen)
    return frozen


def known_secrets(environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> frozenset[str]:
    """Every secret value this process can know of (see the module docstring), longest first when iterated."""
    env = os.environ if environ is None else environ
    found: set[str] = set(extra)
    for name, value in env.items():
        found |= _from_value(name, value)
    found |= _from_files()
    return frozenset(s for s in found if len(s) >= MIN_LEN)


def redact_env(env: Mapping[str, str], secrets: Iterable[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """``env`` without every variable whose value holds a secret; and the names dropped (sorted).

    The secrets are those of ``env`` itself plus this process's (:func:`known_secrets`), so a copied
    environment cannot smuggle a value we know under an innocent name.
    """
    known = set(known_secrets()) | set(known_secrets(env)) if secrets is None else set(secrets)
    dropped = sorted(k for k, v in env.items()
                     if settings.is_secret(k) or _URL_AUTH.search(v or "") or any(s in v for s in known))
    return {k: v for k, v in env.items() if k not in dropped}, dropped


def scrub(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every known secret replaced by ``***``."""
    known = sorted(known_secrets() if secrets is None else set(secrets), key=len, reverse=True)
    if not known:
        return value
    return _scrub(value, known)


def _scrub(value: Any, known: list[str]) -> Any:
    if isinstance(value, str):
        for s in known:
            if s in value:
                value = value.replace(s, MASK)
        return value
    if isinstance(value, Mapping):
        return {_scrub(k, known) if isinstance(k, str) else k: _scrub(v, known) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, known) for v in value]
    return value
