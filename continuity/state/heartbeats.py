"""Signed heartbeats: what a node says about itself, and how the detector decides to believe it.

Anyone who can write to Redis could otherwise keep a dead primary looking alive
(or a live one looking sick) and steer failover. So every heartbeat is
authenticated by the node's own heartbeat key
(``<state>/keys/nodes/<node>/heartbeat.ed25519``, 0600, on that node only, never
in Redis, task arguments or logs).

Why a public-key scheme and not a MAC: with HMAC the verifier holds every node's
secret, so the detector (and, through compose's one shared volume, every node)
could sign as any node. The detector verifies with *public* keys only, and those
come from the node-key registry (:func:`registry_path`, ``continuity-ed25519
<hex> <node>`` lines) that the operator writes — ``continuity up`` does it for
the embedded fleet (:func:`provision`) — never from Redis and never from a
node's own say-so. A node's key verifies for that node and no other: the public
key is looked up by the hash field the beat is filed under, and the signed
statement names the node again.

Why not an Ed25519 signature on every beat: a verify costs ~30-40x an HMAC here
(``bench/heartbeat_scale_bench.py`` prints both in the same run), and 10,000 of
them a second is more than a 2-core control host has. So a beat is a one-time
token (as in S/KEY and TESLA): each node makes a hash chain
``c[i-1] = sha256(c[i])`` over time slots of ``step`` seconds and signs, with its
Ed25519 key, a *statement*: node, chain start and step, a checkpoint
``(j, c[j])`` and its services report. A beat at slot ``i`` discloses ``c[i]``,
which nobody but the node knew before; the detector checks it with ``i - last``
SHA-256 against the last token it accepted (or the checkpoint), and checks that
slot ``i``'s time is within ``max_age`` of the Redis arrival stamp, so an old
token is useless. Knowing every token disclosed so far lets nobody make the next
one, so the detector still cannot sign as a node. The statement's signature is
verified only when its bytes change (new services, a new chain, a checkpoint at
least every ``CHECKPOINT_SECONDS``), a bounded number per batch
(:class:`Budget`): a new leader verifies every node's statement once, over its
first seconds. A statement older than the one accepted, or more than
``CHECKPOINT_SECONDS`` older than the token it comes with, is a replay: an old
services report cannot ride on a fresh token.

Wire format (one string, one HSET): ``v3.<slot>.<hex token>.<hex statement signature>.<statement>``, the
statement ``<node>|<chain t0>|<step>|<slots>|<checkpoint slot>|<hex checkpoint token>|<services JSON>``.
A heartbeat's ``seq`` is its slot's time in milliseconds: it only grows, across chains and restarts too.

Replays are refused twice over: the slot (and ``seq``) must grow past the last
accepted one, and the slot's time must be close to the time Redis stamped the
write (so an old beat re-written later is stale even if the detector lost its
memory).

Node *secrets* (:func:`node_key`, :class:`SecretRing`) are a different thing: the symmetric key replication
sessions between two nodes are keyed with. Heartbeats never use them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from continuity import paths, settings, signing
from continuity.errors import ContinuityError
from continuity.state import keys
from continuity.state.leases import PRELUDE
from continuity.state.scripts import Script

VERSION = "v3"
PREFIX = VERSION.encode() + b"."


class Rejected(Exception):
    """A heartbeat the detector must not believe; ``reason`` is a short stable word for events."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Heartbeat:
    node: str
    seq: int
    ts: float
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    nonce: str = ""

    def body(self) -> str:
        services = json.dumps(self.services, separators=(",", ":"), sort_keys=True) if self.services else "{}"
        return f"{self.node}|{self.seq}|{self.ts:.6f}|{self.nonce}|{services}"


# --- node secrets (replication sessions; never heartbeats) ---------------------------------------------------
def env_var(node: str) -> str:
    return settings.NODE_KEY.env_name(node)


def key_file(node: str) -> Path:
    return paths.state_dir() / "keys" / f"{node}.key"


def node_key(node: str) -> bytes | None:
    """The node's symmetric secret from its env var, else its key file; None when it has none."""
    value = settings.NODE_KEY.get(node)
    if value:
        return value.encode()
    try:
        data = key_file(node).read_bytes().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ContinuityError(f"cannot read node key {key_file(node)}: {exc.strerror}") from None
    return data or None


def ensure_node_key(node: str) -> bytes:
    """Return the node's secret, creating a random one (file mode 0600, never overwritten) if it has none."""
    existing = node_key(node)
    if existing:
        return existing
    path = key_file(node)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        key = node_key(node)
        if key is None:
            raise ContinuityError(f"node key file {path} exists but is empty") from None
        return key
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    key = node_key(node)
    assert key is not None
    return key


class SecretRing:
    """Node secrets looked up once per process (replication sessions); a missing one is looked up again after
    :attr:`retry_missing` seconds, because a long-lived process may start before a node has made its key."""

    retry_missing = 2.0

    def __init__(self, preset: dict[str, bytes] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys: dict[str, bytes | None] = dict(preset or {})
        self._missing_at: dict[str, float] = {}
        self._clock = clock

    def get(self, node: str) -> bytes | None:
        known = self._keys.get(node)
        if known is not None:
            return known
        missed = self._missing_at.get(node)
        if node in self._keys and missed is not None and self._clock() - missed < self.retry_missing:
            return None
        key = self._keys[node] = node_key(node)
        if key is None:
            self._missing_at[node] = self._clock()
        else:
            self._missing_at.pop(node, None)
        return key

    def missing(self) -> bool:
        return bool(self._missing_at)

    def forget(self, node: str) -> None:
        self._keys.pop(node, None)
        self._missing_at.pop(node, None)


# --- heartbeat keys: a private key per node, public keys in the operator's registry ---------------------------
SEED_CONTEXT = b"continuity heartbeat key v2|"
Signer = Union[bytes, signing.SigningKey, Ed25519PrivateKey]  # noqa: UP007 - a runtime alias


def heartbeat_key_file(node: str) -> Path:
    """The node's Ed25519 heartbeat key: in its own directory, so a deployment can give each node only its own."""
    return paths.state_dir() / "keys" / "nodes" / node / "heartbeat.ed25519"


def ensure_heartbeat_key(node: str) -> signing.SigningKey:
    """The node's heartbeat key, created (0600, never over an existing one) the first time."""
    return signing.ensure_key(heartbeat_key_file(node), "heartbeat", node)


def private_key(key: Signer) -> Ed25519PrivateKey:
    """The Ed25519 key a signer stands for. Bytes are a *seed* (tests and the bench give nodes short secrets):
    the key is derived from them with SHA-256, so the same seed always gives the same key pair."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, signing.SigningKey):
        return key.private
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(SEED_CONTEXT + bytes(key)).digest())


def public_of(key: Signer) -> bytes:
    return signing.public_bytes(private_key(key))


def registry_path() -> Path:
    """The node-key registry the detector trusts: ``$CONTINUITY_NODE_KEYS``, else ``<state>/trust/nodes.pub``."""
    return settings.NODE_KEYS.get() or paths.state_dir() / "trust" / "nodes.pub"


def read_registry(path: Path | None = None) -> dict[str, bytes]:
    """Node -> raw public key from the registry (empty when there is none); a malformed file is an error."""
    path = path or registry_path()
    if not path.exists():
        return {}
    out: dict[str, bytes] = {}
    for pk in signing.read_public_keys(path):
        if pk.name:
            out[pk.name] = pk.raw
    return out


def register(entries: Mapping[str, bytes], path: Path | None = None) -> Path:
    """Write (merge) node -> public key lines into the registry: the operator's act, done by ``continuity up``.

    A node already registered with another key is replaced: registering is the operator saying which key is
    that node's (a rotation), so only whoever can write this file — not a node, not Redis — decides it.
    """
    path = path or registry_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    merged = {**read_registry(path), **entries}
    text = "# continuity node heartbeat keys, one `continuity-ed25519 <hex> <node>` per node (the operator's)\n"
    text += "".join(signing.PublicKey(raw, node).line() + "\n" for node, raw in sorted(merged.items()))
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def provision(nodes: Iterable[str], path: Path | None = None) -> Path:
    """Give each node its heartbeat key (on its own key file) and register the public halves (operator side)."""
    return register({n: ensure_heartbeat_key(n).public.raw for n in nodes}, path)


Verifier = Ed25519PublicKey


class KeyRing:
    """Parsed public keys of the nodes, for the detector: it can verify every node and sign as none.

    ``preset`` maps node -> a parsed key, a :class:`~continuity.signing.PublicKey`, or a *seed* (bytes; tests and
    the bench: see :func:`private_key`, only its public half is kept). Otherwise keys come from the registry,
    re-read when the file changes; a node not found is looked up again after :attr:`retry_missing` seconds (the
    operator may register it later).
    """

    retry_missing = 2.0

    def __init__(self, preset: Mapping[str, Any] | None = None, clock: Callable[[], float] = time.monotonic,
                 path: Path | None = None) -> None:
        self._keys: dict[str, Verifier | None] = {n: _verifier(v) for n, v in (preset or {}).items()}
        self._fixed = preset is not None
        self._missing_at: dict[str, float] = {}
        self._clock = clock
        self._path = path
        self._stamp: tuple[float, int] | None = None
        self._registry: dict[str, bytes] = {}

    def refresh(self) -> bool:
        """Re-read the registry if the file changed (one ``stat``); True when any key was added, changed or
        removed, so a holder of looked-up keys (the sweep's per-blueprint table) looks them up again."""
        if self._fixed:
            return False
        return self._reload()

    def _reload(self) -> bool:
        path = self._path or registry_path()
        try:
            st = path.stat()
            stamp = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        registry = read_registry(path) if stamp is not None else {}
        for node, raw in registry.items():
            if self._registry.get(node) != raw:
                self._keys[node] = Ed25519PublicKey.from_public_bytes(raw)
                self._missing_at.pop(node, None)
        for node in self._registry.keys() - registry.keys():
            self._keys.pop(node, None)
        changed = registry != self._registry
        self._registry = registry
        return changed

    def get(self, node: str) -> Verifier | None:
        known = self._keys.get(node)
        if known is not None:
            return known
        if self._fixed and node in self._keys:
            return None
        missed = self._missing_at.get(node)
        if missed is not None and self._clock() - missed < self.retry_missing:
            return None
        self._reload()
        key = self._keys.get(node)
        if key is None:
            self._missing_at[node] = self._clock()
        return key

    def missing(self) -> bool:
        return bool(self._missing_at)

    def forget(self, node: str) -> None:
        self._keys.pop(node, None)
        self._missing_at.pop(node, None)


def _verifier(value: Any) -> Verifier | None:
    """A preset entry as a parsed public key: a parsed key, a :class:`signing.PublicKey`, or a seed (bytes)."""
    if value is None or isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, signing.PublicKey):
        return Ed25519PublicKey.from_public_bytes(value.raw)
    return Ed25519PublicKey.from_public_bytes(public_of(value))


# --- beats: one-time tokens from a signed hash chain ------------------------------------------------------------
STEP = 0.5  # default seconds per chain slot (agents use half their heartbeat interval): a token belongs to one slot
MIN_STEP = 0.01
CHAIN_SECONDS = 3600.0  # a chain lasts at most an hour (and CHAIN_MAX_SLOTS slots); then a new one is signed
CHAIN_MAX_SLOTS = 4096
CHECKPOINT_SECONDS = 60.0  # a new statement (checkpoint) at least this often: it bounds what a fresh verifier
# hashes per node, and how old a statement may be when paired with a token (an older one is a replay)


def _h(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class Chain:
    """``values[i]`` is the token of slot ``i``; ``values[i - 1] == sha256(values[i])``; ``values[0]`` anchors it."""

    def __init__(self, t0: float, slots: int, seed: bytes | None = None, values: list[bytes] | None = None) -> None:
        self.t0, self.slots, self.values = round(t0, 3), slots, values or make_values(slots, seed)


def make_values(slots: int, seed: bytes | None = None) -> list[bytes]:
    values = [b""] * (slots + 1)
    values[slots] = seed or os.urandom(32)
    for i in range(slots, 0, -1):
        values[i - 1] = _h(values[i])
    return values


def statement_text(node: str, chain: Chain, step: float, ckpt: int, services_json: str) -> str:
    return f"{node}|{chain.t0:.3f}|{step!r}|{chain.slots}|{ckpt}|{chain.values[ckpt].hex()}|{services_json}"


class HeartbeatSigner:
    """A node's heartbeat writer: its Ed25519 key signs a *statement* (node, chain, checkpoint, services) only when
    that changes, and every beat discloses the chain token of its slot, which only this process knew until then."""

    def __init__(self, node: str, key: Signer, step: float = STEP, slots: int | None = None) -> None:
        self.node, self.key = node, private_key(key)
        self.step = max(MIN_STEP, float(step))
        # a chain is made in one go (one SHA-256 per slot) on the beat that needs it: keep that to a few ms
        self.slots = max(2, min(CHAIN_MAX_SLOTS, int(CHAIN_SECONDS / self.step), slots or CHAIN_MAX_SLOTS))
        self.every = max(1, int(CHECKPOINT_SECONDS / self.step))
        # Jitter: each statement lasts a period drawn from [every/2, every] slots and each chain from [slots/2,
        # slots]. Nodes started together (a fleet or mass restart) would otherwise all sign a new statement in
        # the same second, every minute, and a detector verifying 10,000 Ed25519 signatures at once (about
        # 0.6 s of CPU) defers beats past the suspect window: false suspicions in waves. Spread, it verifies a
        # few hundred a second.
        self._rng = random.Random()
        self.period = self._draw(self.every)
        self.chain: Chain | None = None
        self.slot = 0
        self.statement = ""
        self.sig = ""
        self.ckpt = 0
        self.services_json = ""
        self._lock = threading.Lock()
        # the first chain is made now, not on the first beat: a beat is never late for a few thousand hashes
        self._ready: list[bytes] | None = make_values(self._draw(self.slots, low=2))

    def _draw(self, most: int, low: int = 1) -> int:
        return self._rng.randint(max(low, most // 2), max(low, most))

    def encode(self, hb: Heartbeat) -> str:
        with self._lock:  # the beat thread and a retry may both sign: one slot, one token each
            return self._encode(hb)

    def _encode(self, hb: Heartbeat) -> str:
        services = json.dumps(hb.services, separators=(",", ":"), sort_keys=True) if hb.services else "{}"
        chain = self.chain
        slot = self.slot + 1
        if chain is not None:
            slot = max(slot, int(round((hb.ts - chain.t0) / self.step)))
        if chain is None or slot > chain.slots:
            last = chain.t0 + self.slot * self.step if chain is not None else float("-inf")
            values, self._ready = self._ready, None
            values = values or make_values(self._draw(self.slots, low=2))
            chain = self.chain = Chain(max(hb.ts, last + self.step) - self.step, len(values) - 1, values=values)
            slot, self.statement = 1, ""
        if not self.statement or services != self.services_json or slot - self.ckpt > self.period:
            self.ckpt, self.services_json = slot - 1, services
            self.period = self._draw(self.every)
            self.statement = statement_text(self.node, chain, self.step, self.ckpt, services)
            self.sig = self.key.sign(self.statement.encode()).hex()
        self.slot = slot
        return f"{VERSION}.{slot}.{chain.values[slot].hex()}.{self.sig}.{self.statement}"


_signers: dict[tuple[str, bytes], HeartbeatSigner] = {}


def encode(hb: Heartbeat, key: Signer) -> str:
    """``hb`` on the wire, from this process's chain for (node, key) (kept between calls: tests, the bench)."""
    pk = private_key(key)
    signer = _signers.get((hb.node, public_of(pk)))
    if signer is None:
        signer = _signers[(hb.node, public_of(pk))] = HeartbeatSigner(hb.node, pk)
    return signer.encode(hb)


def sign(key: Signer, body: str) -> str:
    return private_key(key).sign(body.encode()).hex()


def _check(key: Verifier, body: bytes, tag: bytes) -> bool:
    try:
        key.verify(bytes.fromhex(tag.decode("ascii")), body)
    except (InvalidSignature, ValueError, UnicodeDecodeError):
        return False
    return True


@dataclass
class ChainState:
    """What a verifier keeps per node: the statement it verified, and the newest token it accepted."""

    statement: bytes
    t0: float
    step: float
    slots: int
    services: dict[str, Any]
    last_slot: int
    last_token: bytes
    ckpt: int = 0  # the statement's checkpoint slot: a beat more than CHECKPOINT_SECONDS after it is refused


def _statement(node: str, stmt: bytes) -> ChainState:
    parts = stmt.split(b"|", 6)
    if len(parts) != 7:
        raise Rejected("malformed", "statement has not 7 fields")
    name, t0, step, slots, ckpt, token, services = parts
    if name.decode(errors="replace") != node:
        raise Rejected("node-mismatch", f"statement of {name.decode(errors='replace')!r} stored as {node!r}")
    try:
        parsed = json.loads(services) if services != b"{}" else {}
        if not isinstance(parsed, dict):
            raise ValueError("services is not an object")
        state = ChainState(stmt, float(t0), float(step), int(slots), parsed, int(ckpt), bytes.fromhex(token.decode()),
                           int(ckpt))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise Rejected("malformed", f"signed statement unreadable: {exc}") from None
    if not (state.step >= MIN_STEP and 0 <= state.last_slot <= state.slots and len(state.last_token) == 32):
        raise Rejected("malformed", "statement out of range")
    return state


class Budget:
    """How many statement signatures (the costly check) a batch may verify; past it, rows wait for a later batch."""

    def __init__(self, count: int | None = None) -> None:
        self.left = count

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


class Deferred(Exception):
    """A beat whose new statement this batch had no budget left to verify (not rejected: verified later)."""


def check_beat(node: str, raw: bytes, arrival: float | None, key: Verifier | None, state: ChainState | None,
               max_age: float, budget: Budget | None = None) -> tuple[ChainState, Heartbeat]:
    """Verify one wire beat against the node's registered key and what was accepted before (``state``).

    Returns the new state and the heartbeat, or raises :class:`Rejected` (or :class:`Deferred`). The token must
    hash, in as many steps as slots passed, to the last accepted token (or the statement's checkpoint), and its
    slot's time must be within ``max_age`` of the Redis arrival stamp.
    """
    if raw[:1] == b"{":
        raise Rejected("unsigned", "plain JSON without a signature")
    parts = raw.split(b".", 4)
    if len(parts) != 5 or parts[0] != VERSION.encode():
        raise Rejected("malformed", f"expected {VERSION}.<slot>.<token>.<signature>.<statement>")
    if not parts[3] or not parts[2]:
        raise Rejected("unsigned", "empty token or signature")
    if key is None:
        raise Rejected("unknown-node", f"no registered heartbeat key for node {node!r}")
    try:
        slot, token = int(parts[1]), bytes.fromhex(parts[2].decode())
    except (ValueError, UnicodeDecodeError):
        raise Rejected("malformed", "slot or token unreadable") from None
    stmt = parts[4]
    if state is None or state.statement != stmt:
        if budget is not None and not budget.take():
            raise Deferred(node)
        if not _check(key, stmt, parts[3]):
            raise Rejected("bad-signature", "statement signature does not verify with the node's registered key")
        fresh = _statement(node, stmt)
        if state is not None:
            same_chain = (state.t0, state.step, state.slots) == (fresh.t0, fresh.step, fresh.slots)
            if (same_chain and fresh.ckpt < state.ckpt) or (not same_chain and fresh.t0 < state.t0):
                raise Rejected("replayed", "an older statement than the one accepted")
            if same_chain and state.last_slot >= fresh.last_slot:
                fresh.last_slot, fresh.last_token = state.last_slot, state.last_token  # we are further on
        cand = fresh
    else:
        cand = state
    ts = cand.t0 + slot * cand.step
    if arrival is not None and abs(arrival - ts) > max_age:
        raise Rejected("stale", f"slot time {ts:.3f} but written at {arrival:.3f}")
    if (slot - cand.ckpt) * cand.step > CHECKPOINT_SECONDS + cand.step:
        # the node signs a new statement at least this often: an older one paired with a fresh token is a replay
        raise Rejected("stale", f"statement of slot {cand.ckpt} is too old for slot {slot}")
    steps = slot - cand.last_slot
    if steps <= 0:
        raise Rejected("replayed", f"slot {slot} not after last accepted {cand.last_slot}")
    if slot > cand.slots or len(token) != 32:
        raise Rejected("malformed", "slot beyond the chain")
    x = token
    for _ in range(steps):
        x = _h(x)
    if x != cand.last_token:
        raise Rejected("bad-token", "token is not the node's chain value for its slot")
    if cand is state:
        cand = ChainState(stmt, cand.t0, cand.step, cand.slots, cand.services, slot, token, cand.ckpt)
    else:
        cand.last_slot, cand.last_token = slot, token
    return cand, Heartbeat(node=node, seq=int(round(ts * 1000)), ts=ts, services=cand.services)


def verify(raw: str | bytes, field_node: str, keyring: KeyRing, *, last_seq: int | None, arrival: float | None,
           max_age: float, state: ChainState | None = None) -> Heartbeat:
    """Return the heartbeat if it is authentic, fresh and new for ``field_node``; else raise Rejected.

    ``field_node`` is the hash field it was stored under: a node's valid beat copied under another node's name is
    refused (its key is not that node's). Without ``state`` the token is checked from the statement's checkpoint.
    """
    if not isinstance(raw, (str, bytes)):
        raise Rejected("malformed", "not a string")
    data = raw.encode() if isinstance(raw, str) else raw
    _, hb = check_beat(field_node, data, arrival, keyring.get(field_node), state, max_age)
    if last_seq is not None and hb.seq <= last_seq:
        raise Rejected("replayed", f"seq {hb.seq} not after last accepted {last_seq}")
    return hb


# --- node claims (service-failed markers): signed like beats -------------------------------------------------
def sign_claim(key: Signer, claim: Mapping[str, Any]) -> dict[str, Any]:
    """``claim`` with ``sig``: the node's signature over its canonical JSON (every other field)."""
    body = {k: v for k, v in claim.items() if k != "sig"}
    return {**body, "sig": sign(key, json.dumps(body, sort_keys=True, separators=(",", ":")))}


def verify_claim(claim: Mapping[str, Any], keyring: KeyRing) -> str | None:
    """None when ``claim`` is signed by the key registered for its ``node``; else why it is not believed."""
    node, sig = claim.get("node"), claim.get("sig")
    if not isinstance(sig, str) or not sig:
        return "unsigned"
    key = keyring.get(str(node))
    if key is None:
        return "unknown-node"
    body = {k: v for k, v in claim.items() if k != "sig"}
    if not _check(key, json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), sig.encode()):
        return "bad-signature"
    return None


def digest(raw: str | bytes) -> str:
    """Short fingerprint of a rejected blob: the same bad beat is reported once, not every sweep."""
    data = raw if isinstance(raw, bytes) else raw.encode(errors="replace") if isinstance(raw, str) else b""
    return hashlib.sha256(data).hexdigest()[:16]


# --- in Redis: the beat script every agent runs, and the pending form the sweep drains ------------------------
# KEYS[1]=heartbeats KEYS[2]=arrivals KEYS[3]=nodes_seen KEYS[4]=pending, then per service: lease, holder record,
# epoch. ARGV[1]=node ARGV[2]=beat ARGV[3]=ttl_ms -> {arrival, holder1, epoch1, orphan1, holder2, ...};
# leases held by ARGV[1] are renewed. ``orphan`` is the epoch ARGV[1] may take back: the lease is gone but the
# record says it was ours at the service's current epoch (no fence since), else 0. The beat also lands in the
# pending hash with its arrival stamp, which the sweep drains (newlines blanked: one entry, one line).
BEAT = Script("heartbeat.beat", PRELUDE + """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local beat = ARGV[2]
if string.find(beat, '\\n', 1, true) then beat = (string.gsub(beat, '\\n', ' ')) end
redis.call('HSET', KEYS[1], ARGV[1], beat)
redis.call('HSET', KEYS[2], ARGV[1], now)
redis.call('HSET', KEYS[3], ARGV[1], now)
redis.call('HSET', KEYS[4], ARGV[1], now .. ' ' .. beat)
local out = {now}
for i = 5, #KEYS, 3 do
  local l = get_lease(KEYS[i])
  if l and l.node == ARGV[1] then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
  if l and l.node then
    out[#out + 1] = tostring(l.node)
    out[#out + 1] = tostring(l.epoch or 0)
    out[#out + 1] = '0'
  else
    out[#out + 1] = ''
    out[#out + 1] = '0'
    local r = get_lease(KEYS[i + 1])
    local current = tonumber(redis.call('GET', KEYS[i + 2]) or '0')
    if r and r.node == ARGV[1] and current > 0 and tonumber(r.epoch or -1) == current then
      out[#out + 1] = tostring(current)
    else
      out[#out + 1] = '0'
    end
  end
end
return out
""")


def beat_keys() -> list[str]:
    """The fixed KEYS of :data:`_BEAT`, in order (the bench and tests call the script too)."""
    return [keys.heartbeats(), keys.heartbeat_arrivals(), keys.nodes_seen(), keys.heartbeats_pending()]


def service_keys(services: Sequence[str]) -> list[str]:
    """The per-service KEYS of :data:`BEAT` (lease, holder record, epoch), in the order the script reads them."""
    return [k for s in services for k in (keys.lease(s), keys.lease_holder(s), keys.epoch(s))]


def split_pending(blob: bytes, count: int) -> tuple[list[bytes], tuple[bytes, ...], tuple[bytes, ...]] | None:
    """A drained pending batch (``node, "<arrival> <beat>"`` pairs joined by newlines, as :data:`BEAT` writes them
    and the sweep's scripts return them) as (raw node names, arrival stamps, beats); None when its element count
    does not match (a value held a newline: written by something other than the beat script)."""
    if not count:
        return [], (), ()
    parts = blob.split(b"\n")
    if len(parts) != count:
        return None
    # column-wise, each step one C-level pass: this runs for every beat of the fleet every second
    arrivals, _, raws = zip(*map(bytes.partition, parts[1::2], repeat(b" ")), strict=True)
    return parts[0::2], arrivals, raws
