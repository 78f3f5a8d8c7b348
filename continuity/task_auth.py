"""Signed task messages: who may make a worker run a control-plane task.

Anyone who can write to the broker's Redis could push a Celery message onto a queue, and a worker ran it:
a raw ``continuity.drills.run`` JSON message injected faults, a ``continuity.failover.prepare`` sent through
Flower copied files. Now every message a continuity process publishes carries an **envelope** in its headers
(``continuity_auth``): an Ed25519 signature over

    (task name, task id, args, kwargs, issued-at, expiry, signer key id)

and a worker checks it before a control-plane task (:data:`POLICY`) does anything. A message without an
envelope, with a bad signature, expired, for another task or id, or signed by a key whose role the policy does
not allow for that task, is rejected: the task fails with :class:`Unauthenticated`, nothing runs, and a
``task.rejected`` pulse event names the task and why.

Why an Ed25519 envelope and not Celery's ``auth`` serializer: that serializer needs X.509 certificates and one
shared certificate store, signs with one key per process for every message and cannot say *which role* may
send *which task*; an envelope reuses the key files the pulse and the operators already have
(:mod:`continuity.signing`) and keeps the policy a small table here. Cost: one signature (~30 µs) per publish,
one verification (~100 µs, measured in ``bench/task_auth_bench.py``) per control-plane task.

Keys and roles (public halves are trusted only from files, never from Redis):

* ``control``: ``<state>/keys/control.ed25519``, held by processes without a node (beat: game days, retention).
* ``node``: ``<state>/keys/node-<id>.ed25519``, held by the worker of that node (chain steps it passes on).
* ``operator``: a person's key (``continuity operator keygen``), used by the CLI for switchovers, forced
  failovers and pause; trusted when its public line is in ``ops/stewards.yml`` or
  ``<state>/keys/trusted/operator/*.pub``.

A process's own control/node key is created on first use and its public line written to
``<state>/keys/trusted/<role>/``; a check trusts the keys found there (see ``SIGNING_POLICY.md`` for what that
does and does not defend against). ``CONTINUITY_SIGNER=none`` (Flower) signs nothing, so a task sent through
Flower's API reaches no control-plane task.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuity import paths, settings
from continuity.errors import ContinuityError
from continuity.signing import KeyFileError, PublicKey, SigningKey, ensure_key, read_public_keys
from continuity.stewardship import load_stewardship

log = logging.getLogger(__name__)

HEADER = "continuity_auth"
LABEL = b"continuity-task v1\n"
CONTROL, NODE, OPERATOR = "control", "node", "operator"
ROLES = (CONTROL, NODE, OPERATOR)
FAILOVER_STEPS = ("demote", "fence", "prepare", "promote", "repoint", "verify", "record")

# Which roles may send which control-plane task. A failover chain moves from worker to worker (each step's
# worker publishes the next, and a failed candidate's worker launches the next candidate's chain), so its
# steps accept node keys as well as the detector's/operator's; what a step does is checked against the open
# failover record and the blueprint. A drill or a retention run is started by beat (control) or a person.
POLICY: dict[str, frozenset[str]] = {
    **{f"continuity.failover.{step}": frozenset({CONTROL, NODE, OPERATOR}) for step in FAILOVER_STEPS},
    "continuity.drills.run": frozenset({CONTROL, OPERATOR}),
    "continuity.backup.forget": frozenset({CONTROL, OPERATOR}),
}
SKEW = 60.0  # seconds a signer's clock may be ahead of the checker's


class Unauthenticated(ContinuityError):
    """A control-plane message whose envelope is missing, forged, expired or from a role not allowed."""


@dataclass(frozen=True)
class Envelope:
    task: str
    task_id: str
    issued_at: float
    expires_at: float
    signer: str  # key id
    sig: str  # hex

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "id": self.task_id, "iat": self.issued_at, "exp": self.expires_at,
                "signer": self.signer, "sig": self.sig}

    @classmethod
    def from_dict(cls, raw: Any) -> Envelope:
        if not isinstance(raw, Mapping):
            raise Unauthenticated("the message carries no signature envelope")
        try:
            return cls(str(raw["task"]), str(raw["id"]), float(raw["iat"]), float(raw["exp"]), str(raw["signer"]),
                       str(raw["sig"]))
        except (KeyError, TypeError, ValueError):
            raise Unauthenticated("the signature envelope is malformed") from None


def message(task: str, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any], issued_at: float,
            expires_at: float, signer: str) -> bytes:
    """The signed bytes: canonical JSON of everything that decides what runs, under a label."""
    body = [task, task_id, list(args), dict(kwargs), repr(float(issued_at)), repr(float(expires_at)), signer]
    return LABEL + json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def seal(key: SigningKey, task: str, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any], now: float,
         valid_for: float, not_before: float | None = None) -> Envelope:
    """An envelope for one message, valid ``valid_for`` seconds after ``not_before`` (an ETA) or ``now``."""
    exp = max(now, not_before or now) + valid_for
    sig = key.sign(message(task, task_id, args, kwargs, now, exp, key.key_id)).hex()
    return Envelope(task, task_id, now, exp, key.key_id, sig)


@dataclass
class Trust:
    """Public keys a worker accepts, each with its role."""

    by_id: dict[str, tuple[str, PublicKey]]

    def role_of(self, key_id: str) -> str | None:
        found = self.by_id.get(key_id)
        return found[0] if found else None


def check(trust: Trust, task: str, task_id: str | None, args: Sequence[Any], kwargs: Mapping[str, Any],
          raw: Any, now: float) -> tuple[Envelope, str]:
    """The envelope and its signer's role if ``task`` may run; :class:`Unauthenticated` saying why not."""
    env = Envelope.from_dict(raw)
    if env.task != task or env.task_id != (task_id or ""):
        raise Unauthenticated(f"the envelope was made for {env.task} {env.task_id}, not this message")
    found = trust.by_id.get(env.signer)
    if found is None:
        raise Unauthenticated(f"signed by key {env.signer}, which is not a trusted key")
    role, public = found
    try:
        sig = bytes.fromhex(env.sig)
    except ValueError:
        raise Unauthenticated("the signature is not hex") from None
    if not public.verify(sig, message(task, env.task_id, args, kwargs, env.issued_at, env.expires_at, env.signer)):
        raise Unauthenticated(f"the signature by key {env.signer} does not match the message (forged or altered)")
    if env.issued_at > now + SKEW:
        raise Unauthenticated("the envelope was issued in the future")
    if now > env.expires_at:
        raise Unauthenticated(f"the envelope expired {now - env.expires_at:.0f} s ago")
    allowed = POLICY.get(task)
    if allowed is not None and role not in allowed:
        raise Unauthenticated(f"a {role} key (key {env.signer}) may not send {task}; allowed: "
                              f"{', '.join(sorted(allowed))}")
    return env, role


# --- key files ------------------------------------------------------------------------------------------------------
def keys_dir() -> Path:
    return paths.state_dir() / "keys"


def trusted_dir(role: str) -> Path:
    return keys_dir() / "trusted" / role


def role_key_path(role: str, node: str | None = None) -> Path:
    return keys_dir() / (f"node-{node}.ed25519" if role == NODE else f"{role}.ed25519")


def role_key(role: str, node: str | None = None) -> SigningKey:
    """This process's control or node key, created on first use with its public line in ``trusted/<role>/``."""
    path = role_key_path(role, node)
    key = ensure_key(path, role, node or role)
    pub = trusted_dir(role) / f"{node or role}.pub"
    if not pub.exists():
        pub.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = pub.with_name(f".{pub.name}.tmp")
        tmp.write_text(key.public.line() + "\n", encoding="utf-8")
        tmp.replace(pub)
    return key


def operator_keys() -> dict[str, PublicKey]:
    """Operator keys trusted from files: ``<state>/keys/trusted/operator/*.pub`` and the stewards of
    ``ops/stewards.yml`` (a stewards file that does not load adds none, and says so in the log). What a
    switchover's mandate and a pause note must be signed by."""
    stewards: list[PublicKey] = []
    try:
        st = load_stewardship(paths.stewards_path())
    except ContinuityError as exc:
        log.error("%s does not load; its stewards are not trusted as operators: %s", paths.stewards_path(), exc)
        st = None
    if st is not None:
        stewards = [m.key for m in st.members]
    return {kid: pub for kid, (role, pub) in load_trust(stewards).by_id.items() if role == OPERATOR}


def load_trust(extra_operators: Sequence[PublicKey] = ()) -> Trust:
    """Every ``trusted/<role>/*.pub`` under the state dir, plus operator keys declared in ops/."""
    trusted: dict[str, tuple[str, PublicKey]] = {}
    for role in ROLES:
        folder = trusted_dir(role)
        if folder.is_dir():
            for pub in sorted(folder.glob("*.pub")):
                try:
                    for k in read_public_keys(pub):
                        trusted.setdefault(k.key_id, (role, k))
                except KeyFileError:
                    continue  # a damaged file trusts nobody; the others still count
    for k in extra_operators:
        trusted.setdefault(k.key_id, (OPERATOR, k))
    return Trust(trusted)


# --- which key this process signs with ------------------------------------------------------------------------------
_override: contextvars.ContextVar[SigningKey | None] = contextvars.ContextVar("continuity_signer", default=None)
_default: dict[str, SigningKey | None] = {}
_lock = threading.Lock()


@contextlib.contextmanager
def signing_as(key: SigningKey) -> Iterator[SigningKey]:
    """Messages published inside the block are signed with ``key`` (the CLI: the operator's key)."""
    token = _override.set(key)
    try:
        yield key
    finally:
        _override.reset(token)


def process_key() -> SigningKey | None:
    """The key messages of this process are signed with: an override, else by ``CONTINUITY_SIGNER``."""
    key = _override.get()
    if key is not None:
        return key
    mode = settings.SIGNER.get()
    if mode == "none":
        return None
    node = settings.NODE.get()
    role = NODE if (mode == NODE or (mode == "auto" and node)) else CONTROL
    cache = f"{role}:{node if role == NODE else ''}:{paths.state_dir()}"
    with _lock:
        if cache not in _default:
            _default[cache] = role_key(role, node if role == NODE else None)
        return _default[cache]


def sign_headers(headers: dict[str, Any], args: Sequence[Any], kwargs: Mapping[str, Any],
                 now: float | None = None) -> bool:
    """Add an envelope to a message's headers (Celery protocol 2: ``task``, ``id``, ``eta``); False if unsigned."""
    key = process_key()
    task, task_id = headers.get("task"), headers.get("id")
    if key is None or not task or not task_id:
        return False
    now = time.time() if now is None else now
    eta = _timestamp(headers.get("eta"))
    headers[HEADER] = seal(key, str(task), str(task_id), args, kwargs, now, settings.TASK_SIGNATURE_TTL.get(),
                           eta).to_dict()
    return True


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None
