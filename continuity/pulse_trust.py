"""Who signs the pulse history, and whose signatures a check accepts.

The hash chain alone proves only that the history is self-consistent: anyone
who can write ``pulse_history.jsonl`` can change an event and recompute every
hash after it. So every event also carries an Ed25519 signature of its hash,
made by the **writer key** of the state directory the history lives in
(``<dir of the history>/keys/pulse-writer.ed25519``, 0600, created on first
use, never in Redis or in the pulse). Because each hash covers the previous
one, a valid signature on event *n* vouches for events 1..*n*; ``verify``
therefore checks a signature every :data:`CHECK_EVERY` events and on the last
one, and only when one fails does it look at each signature in between, to
name the first event that was changed.

Signing costs one Ed25519 signature (~30 µs) per event, next to the two fsyncs
(~1 ms) each event already pays; signing only at checkpoints would have left the
events after the last checkpoint forgeable.

Trust: by default a check accepts this state directory's writer key (and any
public keys an operator put in ``keys/pulse-trusted/*.pub``, e.g. the key a
retired writer used). That catches edits by anyone who cannot read the writer
key; someone who can replace files in the state directory can also replace the
key, which only *pinned* keys (``continuity pulse verify --trust FILE``, a public
key kept elsewhere) defend against.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuity.signing import KeyFileError, PublicKey, SigningKey, ensure_key, load_key, public_path, read_public_keys

CHECK_EVERY = 256
WRITER_KEY = "pulse-writer.ed25519"
TRUSTED_DIR = "pulse-trusted"
ROLE = "pulse writer"

_writers: dict[Path, SigningKey] = {}
_writers_lock = threading.Lock()


def keys_dir(history: Path) -> Path:
    return Path(history).parent / "keys"


def writer_key_path(history: Path) -> Path:
    return keys_dir(history) / WRITER_KEY


def writer_key(history: Path) -> SigningKey:
    """This state directory's writer key, created on first use; loaded once per process."""
    path = writer_key_path(history).absolute()
    with _writers_lock:
        key = _writers.get(path)
        if key is None:
            key = _writers[path] = ensure_key(path, ROLE, socket.gethostname())
        return key


def message(event_hash: str) -> bytes:
    """What is signed: the event's hash, under a label so the signature means nothing anywhere else."""
    return b"continuity-pulse-event v1\n" + event_hash.encode("ascii", "replace")


def sign_fields(key: SigningKey, event_hash: str) -> dict[str, str]:
    return {"signer": key.key_id, "sig": key.sign(message(event_hash)).hex()}


@dataclass
class Trust:
    """The public keys a check accepts, by key id, and where they came from (for messages)."""

    keys: dict[str, PublicKey] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def local(cls, history: Path) -> Trust:
        """The writer key beside ``history`` (its public half if the private one is not readable here) and
        ``keys/pulse-trusted/*.pub``. Empty when this state directory never signed anything."""
        trust = cls(source=f"keys in {keys_dir(history)}")
        path = writer_key_path(history)
        try:
            trust.add(load_key(path, ROLE).public)
        except KeyFileError:
            if public_path(path).exists():
                for k in read_public_keys(public_path(path)):
                    trust.add(k)
        trusted = keys_dir(history) / TRUSTED_DIR
        if trusted.is_dir():
            for pub in sorted(trusted.glob("*.pub")):
                for k in read_public_keys(pub):
                    trust.add(k)
        return trust

    @classmethod
    def pinned(cls, files: list[Path]) -> Trust:
        """Only the keys in ``files``: what an operator keeps outside the state directory."""
        trust = cls(source="the keys given with --trust")
        for f in files:
            for k in read_public_keys(Path(f)):
                trust.add(k)
        return trust

    def add(self, key: PublicKey) -> None:
        self.keys[key.key_id] = key

    def signer_problem(self, ev: dict[str, Any]) -> str | None:
        """The cheap part of a signature check, done on every event: signed, and by a key trusted here."""
        signer, sig = ev.get("signer"), ev.get("sig")
        if not isinstance(signer, str) or not isinstance(sig, str):
            return "not signed (the signature was removed, or a writer without a key added it)"
        if signer not in self.keys:
            return f"signed by key {signer}, which is not among {self.source}"
        return None

    def valid(self, ev: dict[str, Any]) -> bool:
        """The whole check: the signature verifies over the event's hash with a trusted key."""
        if self.signer_problem(ev) is not None:
            return False
        try:
            sig = bytes.fromhex(ev["sig"])
        except ValueError:
            return False
        return self.keys[ev["signer"]].verify(sig, message(str(ev.get("hash"))))


def mismatch_reason(ev: dict[str, Any]) -> str:
    return (f"signature by key {ev.get('signer')} does not match: the event was changed after it was signed "
            "(its hash, and every later one, recomputed to hide it)")


__all__ = ["CHECK_EVERY", "Trust", "message", "mismatch_reason", "sign_fields", "writer_key", "writer_key_path"]
