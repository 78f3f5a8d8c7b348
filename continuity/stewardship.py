"""Stewardship: who must approve a destructive drill, a game day or a forced failover, and checking that they did.

The seed plan names a "stewardship circle accountable for approving continuity drill schedules"; this module is
that circle as code. ``ops/stewards.yml`` declares the group, its members (each an operator public key, the line
``continuity operator keygen`` prints, inline or in a file next to it), how many distinct members must approve
(k of n), and what needs approval::

    version: 1
    stewardship:
      group: continuity-stewards
      approvals_needed: 2
      max_validity: 24h            # an approval valid longer than this is not counted
      members:
        - {name: alice, key: "continuity-ed25519 3b6a... alice"}
        - {name: bob, key_file: stewards/bob.pub}
      require:
        destructive: true          # scenarios whose fault kills a process or changes bytes (DESTRUCTIVE_FAULTS)
        scenarios: [node-partition]   # more scenarios that need approval
        exempt: [service-crash]       # destructive ones that do not
        game_days: true            # every game day (beat-run drill) needs approval
        forced_failover: true      # `failover failover --force` needs a second operator's approval

An **approval** is a statement signed with a steward's operator key over *what* (``drill:<scenario>``,
``game-day:<scenario>`` or ``failover:<service>``), when it was made, until when it holds and the approver's key
id. Redis only *stores* statements (:mod:`continuity.state.approvals`): every use verifies each one against the
public keys declared here, so a statement written straight into Redis by someone without a steward's key, one
signed by a key that is not a member, expired, or for something else, counts for nothing. Two statements by the
same key count once.

Without ``ops/stewards.yml`` nothing needs approval (the state before stewardship existed); a fleet that wants
the guarantee declares its stewards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field

from continuity.config import Document, Duration, Strict, load_document, validate
from continuity.durations import parse_duration
from continuity.errors import UsageError
from continuity.signing import KeyFileError, PublicKey, SigningKey, read_public_keys

LABEL = b"continuity-approval v1\n"
SKEW = 60.0  # seconds an approver's clock may be ahead of the checker's
# faults that kill a process or change bytes on disk; the others (stop, partition, latency) only pause things
DESTRUCTIVE_FAULTS = frozenset({"node-kill", "node-loss", "service-crash", "file-corruption", "backup-corruption",
                                "redis-restart"})
SUBJECT_KINDS = ("drill", "game-day", "failover")


def subject(kind: str, name: str) -> str:
    """What an approval is for: ``drill:<scenario>``, ``game-day:<scenario>`` or ``failover:<service>``."""
    if kind not in SUBJECT_KINDS:
        raise ValueError(f"unknown approval kind {kind!r}")
    return f"{kind}:{name}"


# --- the signed statement ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Approval:
    subject: str
    issued_at: float
    expires_at: float
    approver: str  # key id
    sig: str  # hex

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "iat": self.issued_at, "exp": self.expires_at, "approver": self.approver,
                "sig": self.sig}

    @classmethod
    def from_dict(cls, raw: Any) -> Approval:
        if isinstance(raw, str | bytes):
            raw = json.loads(raw)
        if not isinstance(raw, Mapping):
            raise ValueError("not an approval statement")
        return cls(str(raw["subject"]), float(raw["iat"]), float(raw["exp"]), str(raw["approver"]), str(raw["sig"]))


def message(subj: str, issued_at: float, expires_at: float, approver: str) -> bytes:
    """The signed bytes, under a label so the signature means nothing anywhere else."""
    body = [subj, repr(float(issued_at)), repr(float(expires_at)), approver]
    return LABEL + json.dumps(body, separators=(",", ":")).encode()


def sign(key: SigningKey, subj: str, now: float, valid_for: float) -> Approval:
    exp = now + valid_for
    return Approval(subj, now, exp, key.key_id, key.sign(message(subj, now, exp, key.key_id)).hex())


# --- ops/stewards.yml -----------------------------------------------------------------------------------------------
class MemberSpec(Strict):
    name: str
    key: str | None = None
    key_file: str | None = None


class RequireSpec(Strict):
    destructive: bool = True
    scenarios: list[str] = Field(default_factory=list)
    exempt: list[str] = Field(default_factory=list)
    game_days: bool = True
    forced_failover: bool = True


class GroupSpec(Strict):
    group: str
    members: list[MemberSpec] = Field(min_length=1)
    approvals_needed: int = Field(default=1, ge=1)
    max_validity: Duration = 86400.0
    require: RequireSpec = Field(default_factory=RequireSpec)


class StewardsFile(Strict):
    version: int = 1
    stewardship: GroupSpec


@dataclass(frozen=True)
class Steward:
    name: str
    key: PublicKey

    @property
    def key_id(self) -> str:
        return self.key.key_id


@dataclass(frozen=True)
class Tally:
    """What the approvals for one subject add up to."""

    subject: str
    required: int
    valid: tuple[tuple[Approval, str], ...]  # (statement, steward name), one per steward
    ignored: tuple[str, ...]  # why each other statement did not count

    @property
    def ok(self) -> bool:
        return len(self.valid) >= self.required

    def approvers(self) -> list[dict[str, Any]]:
        """The counted approvals as recorded in drill records, postmortems and pulse events."""
        return [{"name": name, "key_id": a.approver, "at": a.issued_at, "expires": a.expires_at}
                for a, name in self.valid]


@dataclass(frozen=True)
class Stewardship:
    source: str
    group: str
    members: tuple[Steward, ...]
    required: int
    max_validity: float
    spec: RequireSpec

    def member(self, key_id: str) -> Steward | None:
        return next((m for m in self.members if m.key_id == key_id), None)

    def drill_needs_approval(self, name: str, fault_type: str, game_day: bool = False) -> bool:
        if game_day and self.spec.game_days:
            return True
        if name in self.spec.exempt:
            return False
        return name in self.spec.scenarios or (self.spec.destructive and fault_type in DESTRUCTIVE_FAULTS)

    def tally(self, subj: str, raws: Iterable[Any], now: float, exclude: str | None = None,
              required: int | None = None) -> Tally:
        """Verify every stored statement for ``subj`` against the declared members; ``exclude`` is a key id whose
        approval does not count (the operator forcing a failover cannot be their own second operator)."""
        valid: dict[str, tuple[Approval, str]] = {}
        ignored: list[str] = []
        for raw in raws:
            try:
                a = Approval.from_dict(raw)
                sig = bytes.fromhex(a.sig)
            except (ValueError, KeyError, TypeError):
                ignored.append("a malformed statement")
                continue
            steward = self.member(a.approver)
            why = None
            if a.subject != subj:
                why = f"key {a.approver}: made for {a.subject}"
            elif steward is None:
                why = f"key {a.approver} is not a steward of {self.group}"
            elif not steward.key.verify(sig, message(a.subject, a.issued_at, a.expires_at, a.approver)):
                why = f"key {a.approver} ({steward.name}): signature does not match (forged or altered)"
            elif a.issued_at > now + SKEW:
                why = f"{steward.name}: issued in the future"
            elif now > a.expires_at:
                why = f"{steward.name}: expired {now - a.expires_at:.0f}s ago"
            elif a.expires_at - a.issued_at > self.max_validity + 1:
                why = f"{steward.name}: valid longer than the allowed {self.max_validity:.0f}s"
            elif a.approver == exclude:
                why = f"{steward.name}: the acting operator cannot approve their own action"
            if why is not None:
                ignored.append(why)
                continue
            assert steward is not None
            best = valid.get(a.approver)
            if best is None or best[0].expires_at < a.expires_at:
                valid[a.approver] = (a, steward.name)
        need = self.required if required is None else required
        return Tally(subj, need, tuple(sorted(valid.values(), key=lambda v: v[0].issued_at)), tuple(ignored))

    def missing(self, t: Tally, command: str) -> str:
        """One line saying what is missing, for a refusal."""
        have = ", ".join(name for _a, name in t.valid) or "none"
        line = (f"needs {t.required} approval(s) from stewards {self.group!r} for {t.subject}, has {len(t.valid)} "
                f"(approved by: {have}); missing {t.required - len(t.valid)}: a steward runs `{command}`")
        if t.ignored:
            line += f"; not counted: {'; '.join(t.ignored)}"
        return line


def _member_key(doc: Document, base: Path, i: int, m: MemberSpec) -> PublicKey:
    where = ("stewardship", "members", i)
    if (m.key is None) == (m.key_file is None):
        raise doc.error(where, "give exactly one of `key` (a public key line) or `key_file`")
    if m.key is not None:
        parts = m.key.split()
        try:
            if len(parts) < 2 or parts[0] != "continuity-ed25519":
                raise ValueError
            key = PublicKey(bytes.fromhex(parts[1]), m.name)
            Ed25519PublicKey.from_public_bytes(key.raw)
        except ValueError:
            raise doc.error(where + ("key",), "expected `continuity-ed25519 <64 hex digits> [name]` "
                                              "(the line `continuity operator keygen` prints)") from None
        return key
    path = Path(m.key_file or "")
    path = path if path.is_absolute() else base / path
    try:
        keys = read_public_keys(path)
    except KeyFileError as exc:
        raise doc.error(where + ("key_file",), str(exc)) from None
    if len(keys) != 1:
        raise doc.error(where + ("key_file",), f"{path} holds {len(keys)} keys; a member has exactly one")
    return PublicKey(keys[0].raw, m.name)


def parse_stewardship(doc: Document, scenario_names: Iterable[str] | None = None) -> Stewardship:
    if not isinstance(doc.data, dict):
        raise doc.error((), "a stewards file is a mapping with key `stewardship`")
    model = validate(doc, StewardsFile)
    g = model.stewardship
    base = Path(doc.file).parent
    members: list[Steward] = []
    seen: dict[str, str] = {}
    for i, m in enumerate(g.members):
        key = _member_key(doc, base, i, m)
        if key.key_id in seen:
            raise doc.error(("stewardship", "members", i), f"key {key.key_id} is already {seen[key.key_id]}'s")
        if m.name in seen.values():
            raise doc.error(("stewardship", "members", i, "name"), f"duplicate member name {m.name!r}")
        seen[key.key_id] = m.name
        members.append(Steward(m.name, key))
    if g.approvals_needed > len(members):
        raise doc.error(("stewardship", "approvals_needed"),
                        f"needs {g.approvals_needed} approvals but the group has {len(members)} member(s)")
    if g.max_validity <= 0:
        raise doc.error(("stewardship", "max_validity"), "must be positive")
    if scenario_names is not None:
        known = set(scenario_names)
        for section in ("scenarios", "exempt"):
            for i, name in enumerate(getattr(g.require, section)):
                if name not in known:
                    raise doc.error(("stewardship", "require", section, i),
                                    f"unknown scenario {name!r} (known: {', '.join(sorted(known))})")
    return Stewardship(doc.file, g.group, tuple(members), g.approvals_needed, g.max_validity, g.require)


def load_stewardship(path: Path, scenario_names: Iterable[str] | None = None) -> Stewardship | None:
    """The declared stewardship, or None when ``path`` does not exist (nothing needs approval)."""
    if not Path(path).exists():
        return None
    return parse_stewardship(load_document(path), scenario_names)


def valid_for(text: str | None, st: Stewardship) -> float:
    """An approval's length from ``--for`` (default: one hour, capped by ``max_validity``)."""
    try:
        secs = parse_duration(text) if text else min(3600.0, st.max_validity)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    if secs <= 0 or secs > st.max_validity:
        raise UsageError(f"--for must be positive and at most {st.max_validity:.0f}s (max_validity in {st.source})")
    return secs
