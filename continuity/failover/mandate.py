"""An operator's mandate: what makes a switchover or a forced failover more than a node's say-so.

Failover steps accept node keys (a chain moves from worker to worker, :mod:`continuity.task_auth`), so a task
envelope alone cannot tell an operator's switchover from one any node — or anyone holding a node's key —
made up. A switchover or forced failover therefore carries a **mandate** in its chain context: an Ed25519
signature by an operator key over

    (record id, service, kind, target node, old primary, issued-at, signer key id)

made by the CLI (``failover switchover`` / ``failover --force``) when it opens the record. Every step of such
a chain checks it (:func:`check`) against the operator keys trusted from files — ``ops/stewards.yml`` and
``<state>/keys/trusted/operator/`` — and against the context and the open record: a mandate for another
record, service, kind or old primary does not carry over. The record id is unique per failover, so a mandate
cannot be reused for a new one; a step of a closed record does nothing anyway.

No expiry: the mandate is bound to one record, and the record is what lives as long as the failover does
(a forced failover may wait out a lease for minutes before it fences).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from continuity import task_auth
from continuity.errors import ContinuityError
from continuity.signing import PublicKey, SigningKey

LABEL = b"continuity-failover-mandate v1\n"
NEEDS_MANDATE = ("switchover", "forced")
SKEW = 60.0


class NoMandate(ContinuityError):
    """A switchover or forced failover step without a valid operator mandate: refused, nothing runs."""


@dataclass(frozen=True)
class Mandate:
    record_id: str
    service: str
    kind: str
    target: str
    old_primary: str | None
    issued_at: float
    signer: str
    sig: str

    def to_dict(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "service": self.service, "kind": self.kind, "target": self.target,
                "old_primary": self.old_primary, "iat": self.issued_at, "signer": self.signer, "sig": self.sig}

    @classmethod
    def from_dict(cls, raw: Any) -> Mandate:
        if not isinstance(raw, Mapping):
            raise NoMandate(f"the operator mandate must be an object, got {type(raw).__name__}")
        try:
            old = raw.get("old_primary")
            return cls(str(raw["record_id"]), str(raw["service"]), str(raw["kind"]), str(raw["target"]),
                       None if old is None else str(old), float(raw["iat"]), str(raw["signer"]), str(raw["sig"]))
        except (KeyError, TypeError, ValueError):
            raise NoMandate("the operator mandate is malformed") from None


def message(record_id: str, service: str, kind: str, target: str, old_primary: str | None, issued_at: float,
            signer: str) -> bytes:
    body = [record_id, service, kind, target, old_primary, repr(float(issued_at)), signer]
    return LABEL + json.dumps(body, separators=(",", ":")).encode()


def grant(key: SigningKey, record_id: str, service: str, kind: str, target: str, old_primary: str | None,
          now: float) -> Mandate:
    """The operator's signed go-ahead for one failover record."""
    sig = key.sign(message(record_id, service, kind, target, old_primary, now, key.key_id)).hex()
    return Mandate(record_id, service, kind, target, old_primary, now, key.key_id, sig)


def check(raw: Any, *, record_id: str, service: str, kind: str, old_primary: str | None, target: str | None,
          operators: Mapping[str, PublicKey], now: float) -> Mandate | None:
    """The verified mandate of a step (None for an automatic failover, which needs none); :class:`NoMandate`
    saying why when a switchover or forced failover has none, a forged one, or one made for something else.
    ``target`` is the record's first candidate (None: not compared)."""
    if kind not in NEEDS_MANDATE:
        return None
    if raw is None:
        raise NoMandate(f"a {kind} needs an operator's mandate (`continuity failover` signs one with the operator "
                        "key); this one carries none")
    m = raw if isinstance(raw, Mandate) else Mandate.from_dict(raw)
    key = operators.get(m.signer)
    if key is None:
        raise NoMandate(f"the {kind} mandate is signed by key {m.signer}, which is not a trusted operator key")
    try:
        sig = bytes.fromhex(m.sig)
    except ValueError:
        raise NoMandate("the mandate's signature is not hex") from None
    if not key.verify(sig, message(m.record_id, m.service, m.kind, m.target, m.old_primary, m.issued_at, m.signer)):
        raise NoMandate(f"the {kind} mandate does not match its signature by key {m.signer} (forged or altered)")
    wanted = {"record": record_id, "service": service, "kind": kind, "old primary": old_primary}
    got = {"record": m.record_id, "service": m.service, "kind": m.kind, "old primary": m.old_primary}
    if target is not None:
        wanted["target"], got["target"] = target, m.target
    wrong = [f"{k} {got[k]!r} (this step: {wanted[k]!r})" for k in wanted if wanted[k] != got[k]]
    if wrong:
        raise NoMandate(f"the mandate was made for another failover: {', '.join(wrong)}")
    if m.issued_at > now + SKEW:
        raise NoMandate("the mandate was issued in the future")
    return m



def trusted_operators() -> dict[str, PublicKey]:
    """Operator keys trusted from files (:func:`continuity.task_auth.operator_keys`)."""
    return task_auth.operator_keys()
