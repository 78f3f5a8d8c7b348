"""Signed node registrations: the pid a drill may kill is one the node itself vouched for.

A worker announces itself in ``continuity:nodes`` (hostname, pid, start time, queue). Drills act on that pid:
``node-kill`` sends it SIGKILL, ``node-stop`` SIGSTOP, a rollback checks it before relaunching. Anyone who can
write to Redis could ``HSET`` a node's entry with another process's pid and have a drill kill it (issue 11).

So the worker signs its registration with its node key (``<state>/keys/node-<id>.ed25519``, the key its task
messages are signed with, :mod:`continuity.task_auth`), and :func:`verified` accepts a registration only when

* its signature verifies under the public key trusted for *that* node (``keys/trusted/node/<id>.pub``; a key
  trusted for another node does not do: a node cannot speak for its neighbour), and
* it names that node (the signed body carries the node id, so an entry cannot be moved to another field).

The signed body is the canonical JSON of the registration under a label, so it cannot be mistaken for a
task envelope or a pulse signature made with the same key. A replayed old registration still names a pid
that may since belong to someone else: the drill's own check (:func:`continuity.drills.probes.worker_pid`:
the process must be alive and its environment must name the node) covers that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from continuity import task_auth
from continuity.signing import KeyFileError, PublicKey, SigningKey, read_public_keys

LABEL = b"continuity-node-registration v1\n"
SIGNATURE_FIELDS = ("signer", "sig")


def body(info: Mapping[str, Any]) -> bytes:
    """The signed bytes: every field but the signature's own, canonical JSON under a label."""
    fields = {k: v for k, v in info.items() if k not in SIGNATURE_FIELDS}
    return LABEL + json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(key: SigningKey, info: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` with ``signer`` (key id) and ``sig`` (hex) added."""
    plain = {k: v for k, v in info.items() if k not in SIGNATURE_FIELDS}
    return {**plain, "signer": key.key_id, "sig": key.sign(body(plain)).hex()}


def node_keys(node: str) -> list[PublicKey]:
    """The public keys trusted for ``node`` (its file under ``keys/trusted/node/``), none when absent or damaged."""
    path = task_auth.trusted_dir(task_auth.NODE) / f"{node}.pub"
    try:
        return read_public_keys(path) if path.is_file() else []
    except KeyFileError:
        return []


def why_not(info: Mapping[str, Any] | None, node: str, keys: list[PublicKey]) -> str | None:
    """None when ``info`` is ``node``'s registration signed by one of ``keys``; else the reason, one line."""
    if not info:
        return f"node {node!r} has no registration"
    if info.get("node") != node:
        return f"the registration under {node!r} names node {info.get('node')!r}"
    signer, sig = info.get("signer"), info.get("sig")
    if not isinstance(signer, str) or not isinstance(sig, str):
        return f"the registration of {node!r} is not signed"
    key = next((k for k in keys if k.key_id == signer), None)
    if key is None:
        return f"the registration of {node!r} is signed by key {signer}, which is not {node!r}'s trusted key"
    try:
        raw = bytes.fromhex(sig)
    except ValueError:
        return f"the registration of {node!r} carries a malformed signature"
    if not key.verify(raw, body(info)):
        return f"the registration of {node!r} does not match its signature (forged or altered)"
    return None


def verified(info: Mapping[str, Any] | None, node: str) -> dict[str, Any] | None:
    """``info`` if it is ``node``'s own signed registration (see the module docstring), else None."""
    if why_not(info, node, node_keys(node)) is not None:
        return None
    assert info is not None
    return dict(info)
