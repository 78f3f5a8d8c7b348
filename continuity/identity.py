"""Who is acting: the operator identity recorded as ``who`` in failover records and pulse events.

``getpass`` answers with whatever ``LOGNAME``/``USER`` say, so ``LOGNAME=cfo
continuity failover pause`` used to record ``cfo@host``. An operator now holds
an Ed25519 key file (``continuity operator keygen``; ``$CONTINUITY_OPERATOR_KEY``,
else ``~/.config/continuity/operator.ed25519``, 0600) and ``who`` names its key
id: ``alice@laptop [key 1a2b3c4d5e6f7a8b]``. The name beside the id is the one
written into the key file when it was made; the key id is what identifies.

What the key id proves: the process that recorded it could read that private
key file (refused when others can read it), and the pulse event carrying it is
signed by the state dir's writer key. For a switchover and a forced failover
the key also signs the action itself (:mod:`continuity.failover.mandate`), and
:func:`require_operator_key` refuses those without a key.

Without a key file ``who`` is the login name and host, marked
``[unauthenticated]``: a claim anyone can make by setting ``LOGNAME``.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from continuity import settings
from continuity.errors import UsageError
from continuity.signing import SigningKey, create_key, load_key, public_path

ROLE = "operator"


def key_path() -> Path:
    configured = settings.OPERATOR_KEY.get()
    if configured:
        return configured
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "continuity" / "operator.ed25519"


def login_name() -> str:
    """``user@host`` from the environment: a display name, never an identity."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Identity:
    name: str
    key_id: str | None = None  # None: no operator key, the name is only a claim

    @property
    def who(self) -> str:
        return f"{self.name} [key {self.key_id}]" if self.key_id else f"{self.name} [unauthenticated]"


def operator_key() -> SigningKey | None:
    """The operator's key, None when there is no key file; :class:`~continuity.signing.KeyFileError` when
    there is one that cannot be used (an operator who made a key means to be identified by it)."""
    path = key_path()
    if not path.exists():
        return None
    return load_key(path, ROLE)


def require_operator_key(action: str) -> SigningKey:
    """The operator key an action needs (switchover, forced failover, pause, resume, drill halt), trusted by the
    fleet: :class:`UsageError` (exit 2) saying how to get one when there is none, or when the key is not among
    the fleet's trusted operator keys (:func:`continuity.task_auth.operator_keys`). Workers refuse or ignore
    those actions unless an operator key they trust signed them, so asking without one could only fail later,
    less clearly (a pause note the detector silently ignores)."""
    key = operator_key()
    if key is None:
        raise UsageError(f"{action} needs an operator key: make one with `continuity operator keygen` (or set "
                         f"${settings.OPERATOR_KEY.name}) and have its public line trusted (ops/stewards.yml or "
                         "<state>/keys/trusted/operator/)")
    from continuity import task_auth  # reads ops/stewards.yml and the trusted-key files: only when acting

    if key.key_id not in task_auth.operator_keys():
        # the fleet would ignore (pause, resume, halt) or refuse (switchover) what this key signs: say so now
        raise UsageError(f"{action} needs an operator key the fleet trusts: key {key.key_id} ({key.path}) is neither "
                         "in <state>/keys/trusted/operator/ nor a steward of ops/stewards.yml; copy its public line "
                         f"({public_path(key.path)}) there")
    return key


def current() -> Identity:
    key = operator_key()
    if key is None:
        return Identity(login_name())
    return Identity(key.name or login_name(), key.key_id)


def who() -> str:
    return current().who


def make_key(name: str | None = None, path: Path | None = None) -> SigningKey:
    """A new operator key (refusing to overwrite one: its key id is someone's identity in the records)."""
    path = path or key_path()
    if path.exists():
        raise UsageError(f"{path} already exists (key {load_key(path, ROLE).key_id}); remove it first to replace it")
    return create_key(path, ROLE, name or login_name())
