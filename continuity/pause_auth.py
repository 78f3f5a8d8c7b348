"""Signed maintenance pauses: automatic failover stops only because an operator said so.

``continuity failover pause`` writes a note to Redis that the detector reads before it fails anything over.
Unsigned, anyone able to write to Redis could switch automatic failover off for the whole fleet with one
``SET`` (issue 11). So the CLI signs the note with the operator key (:func:`sign`), and the detector honours a
pause only when its signature verifies under an operator key trusted from files (:class:`Checker`; see
:func:`continuity.task_auth.operator_keys`); every other pause note is ignored by failover and reported
(``failover.pause_rejected``). ``failover status`` and the drills still see every note: a pause, even an
unsigned one, still stops drills from starting (refusing a drill is the safe direction).

A resume is signed too, because a resume is a deletion: anyone able to write to Redis can ``DEL`` a pause note,
and a maintenance window that ends silently lets the detector fail over a service an operator is working on.
Nothing in Redis can stop a deletion, so the detector *remembers* (:class:`Memory`, in the sweeping process):
every sweep reads the pause notes; a note it honoured that then disappears (or is replaced by one it does not
honour) keeps pausing that scope until its declared end, unless ``failover resume`` left a **resume statement**
(:func:`sign_resume`, label ``continuity-resume v1``) signed by a trusted operator key that names the ended
note by its signature. Each such removal is reported once as ``failover.pause_rejected`` (reason: removed
without a signed resume). The statement is bound to one note (its ``sig``), so an old resume replayed after a
new pause ends nothing. Limit, stated in SECURITY.md: the memory is the sweeping detector's own; a detector
that starts (or takes over the sweep) after a note was deleted never saw it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from continuity import task_auth
from continuity.signing import PublicKey, SigningKey
from continuity.state.controls import GLOBAL

LABEL = b"continuity-pause v1\n"
RESUME_LABEL = b"continuity-resume v1\n"
SIGNATURE_FIELDS = ("signer", "sig")


def message(body: Mapping[str, Any]) -> bytes:
    fields = {k: v for k, v in body.items() if k not in SIGNATURE_FIELDS}
    return LABEL + json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(key: SigningKey, body: Mapping[str, Any]) -> dict[str, Any]:
    """The pause note with ``signer`` (the operator's key id) and ``sig`` added."""
    plain = {k: v for k, v in body.items() if k not in SIGNATURE_FIELDS}
    return {**plain, "signer": key.key_id, "sig": key.sign(message(plain)).hex()}


def why_not(body: Any, scope: str | None, operators: Mapping[str, PublicKey]) -> str | None:
    """None when ``body`` is a pause of ``scope`` (a service, None for the fleet) signed by a trusted operator."""
    if not isinstance(body, Mapping):
        return "the pause note is not a JSON object"
    signer, sig = body.get("signer"), body.get("sig")
    if not isinstance(signer, str) or not isinstance(sig, str):
        return "the pause note is not signed by an operator key"
    key = operators.get(signer)
    if key is None:
        return f"the pause note is signed by key {signer}, which is not a trusted operator key"
    try:
        raw = bytes.fromhex(sig)
    except ValueError:
        return "the pause note's signature is not hex"
    if not key.verify(raw, message(body)):
        return f"the pause note does not match its signature by key {signer} (forged or altered)"
    if body.get("service") != scope:
        return f"the pause note was signed for {body.get('service') or 'the whole fleet'}, not this scope"
    return None


@dataclass
class Checker:
    """Decides which pause notes failover honours; keeps why it ignored the others (for the pulse)."""

    operators: Mapping[str, PublicKey] | None = None
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, body: Any, scope: str | None) -> bool:
        if self.operators is None:
            self.operators = task_auth.operator_keys()  # read once per check, and only when a pause exists
        why = why_not(body, scope, self.operators)
        if why is None:
            return True
        signer = body.get("signer") if isinstance(body, Mapping) else None
        self.rejected.append({"scope": scope or "all", "reason": why, "signer": signer})
        return False


def verify_statement(body: Any, label: bytes, what: str, operators: Mapping[str, PublicKey]) -> str | None:
    """None when ``body`` (a JSON object with ``signer``/``sig``) is signed under ``label`` by one of
    ``operators``; else why not, in words (``what`` names the statement)."""
    if not isinstance(body, Mapping):
        return f"the {what} is not a JSON object"
    signer, sig = body.get("signer"), body.get("sig")
    if not isinstance(signer, str) or not isinstance(sig, str):
        return f"the {what} is not signed by an operator key"
    key = operators.get(signer)
    if key is None:
        return f"the {what} is signed by key {signer}, which is not a trusted operator key"
    try:
        raw = bytes.fromhex(sig)
    except ValueError:
        return f"the {what}'s signature is not hex"
    fields = {k: v for k, v in body.items() if k not in SIGNATURE_FIELDS}
    if not key.verify(raw, label + json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()):
        return f"the {what} does not match its signature by key {signer} (forged or altered)"
    return None


def sign_statement(key: SigningKey, label: bytes, plain: Mapping[str, Any]) -> dict[str, Any]:
    """``plain`` with ``signer`` and ``sig`` (over ``label`` + its canonical JSON) added."""
    fields = json.dumps(dict(plain), sort_keys=True, separators=(",", ":"), default=str).encode()
    return {**plain, "signer": key.key_id, "sig": key.sign(label + fields).hex()}


def sign_resume(key: SigningKey, scope: str | None, ended: Mapping[str, Any] | None, who: str,
                at: float) -> dict[str, Any]:
    """The statement ``failover resume`` leaves: ``scope`` resumed by ``who``, ending the note ``ended`` (named by
    its signature; None when there was no signed note to end)."""
    ends = ended.get("sig") if isinstance(ended, Mapping) else None
    plain = {"service": scope, "who": who, "at": at, "ends": ends if isinstance(ends, str) else None}
    return sign_statement(key, RESUME_LABEL, plain)


def resume_why_not(statement: Any, scope: str | None, note: Mapping[str, Any],
                   operators: Mapping[str, PublicKey]) -> str | None:
    """None when ``statement`` is a trusted operator's resume of ``scope`` that ends exactly ``note``."""
    why = verify_statement(statement, RESUME_LABEL, "resume statement", operators)
    if why is not None:
        return why
    if statement.get("service") != scope:
        return "the resume statement is for another scope"
    if statement.get("ends") != note.get("sig"):
        return "the resume statement ends another pause note"
    return None


def scope_of(key: str) -> str | None:
    """Memory key -> scope (None: the whole fleet)."""
    return None if key == GLOBAL else key



@dataclass
class Memory:
    """The pause notes this detector honoured, kept across sweeps so a deletion is not a resume (see above).

    ``observe`` is called every sweep with the raw notes read (scope key -> bytes/None, :data:`GLOBAL` for the
    fleet); a note's signature is checked only when its bytes change. ``held`` says which remembered notes
    still pause their scope although Redis no longer shows them.
    """

    honoured: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)  # scope -> (raw, note)
    held: dict[str, dict[str, Any]] = field(default_factory=dict)  # scope -> note removed without a resume
    verdicts: dict[str, tuple[bytes, bool]] = field(default_factory=dict)  # scope -> (raw, honoured?)

    def observe(self, raws: Mapping[str, Any], resumes: Any, now: float,
                operators: Any = None) -> list[dict[str, Any]]:
        """Update from this sweep's notes; ``resumes(scopes)`` reads the resume statements of the scopes whose
        honoured note vanished (scope key -> parsed statement or None). Returns the removals to report."""
        ops: dict[str, PublicKey] | None = None

        def trusted() -> Mapping[str, PublicKey]:
            nonlocal ops
            if ops is None:
                ops = dict(operators() if callable(operators) else (operators or task_auth.operator_keys()))
            return ops

        gone: list[str] = []
        for scope, raw in raws.items():
            raw_b = raw.encode() if isinstance(raw, str) else raw
            if raw_b:
                seen = self.verdicts.get(scope)
                if seen is None or seen[0] != raw_b:
                    try:
                        note = json.loads(raw_b)
                    except ValueError:
                        note = None
                    ok = why_not(note, scope_of(scope), trusted()) is None
                    self.verdicts[scope] = (raw_b, ok)
                    if ok:
                        self.honoured[scope] = (raw_b, note)
                        self.held.pop(scope, None)
                        continue
                elif seen[1]:
                    continue
            else:
                self.verdicts.pop(scope, None)
            if scope in self.honoured and scope not in self.held:
                gone.append(scope)
        out: list[dict[str, Any]] = []
        if gone:
            statements = resumes(gone)
            for scope in gone:
                _, note = self.honoured[scope]
                until = note.get("until")
                if isinstance(until, int | float) and now >= until:  # its window had ended: nothing to hold
                    del self.honoured[scope]
                    continue
                if resume_why_not(statements.get(scope), scope_of(scope), note, trusted()) is None:
                    del self.honoured[scope]
                    continue
                self.held[scope] = note
                out.append({"scope": "all" if scope == GLOBAL else scope, "signer": note.get("signer"),
                            "reason": "the operator-signed pause note was removed without a signed resume: it "
                                      "still pauses failover until its declared end or `continuity failover "
                                      "resume`"})
        for scope in list(self.held):
            until = self.held[scope].get("until")
            if isinstance(until, int | float) and now >= until:  # its window ended: nothing left to hold
                del self.held[scope]
                self.honoured.pop(scope, None)
        return out

    def paused(self) -> set[str]:
        """Scope keys a remembered (removed) note still pauses."""
        return set(self.held)
