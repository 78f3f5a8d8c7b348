"""Signed drill halts: who stopped a drill is the operator key that signed the request, not a name in Redis.

``continuity drill halt`` needs an operator key the fleet trusts and signs the request (label
``continuity-drill-halt v1``, every field but the signature); the runner checks it against the trusted operator
keys (``<state>/keys/trusted/operator/``, ``ops/stewards.yml``) and records the verified key id as ``signer``
in ``drill.halted`` (None, with the reason, when the request is unsigned, forged or by an untrusted key).

An unverified halt is still honoured, on purpose: halting is the safe direction. It only brings forward the
rollbacks every drill runs at its end anyway (the injected fault is undone sooner, never later), and someone
able to write to Redis can already keep drills from starting (any pause note stops them) or fail them. Refusing
it would take away the break-glass way to stop a fault in an emergency when no trusted key is at hand (``SET``
the request by hand). What the signature buys is the record: the pulse says whether a trusted operator stopped
the drill, and which one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from continuity.pause_auth import sign_statement, verify_statement
from continuity.signing import PublicKey, SigningKey

LABEL = b"continuity-drill-halt v1\n"


def sign(key: SigningKey, body: Mapping[str, Any]) -> dict[str, Any]:
    """The halt request ``{drill, who, at, reason}`` with ``signer`` and ``sig`` added."""
    return sign_statement(key, LABEL, {k: v for k, v in body.items() if k not in ("signer", "sig")})


def signer(body: Mapping[str, Any], operators: Mapping[str, PublicKey]) -> tuple[str | None, str | None]:
    """(key id of the trusted operator who signed ``body``, None) or (None, why it is not verified)."""
    why = verify_statement(body, LABEL, "halt request", operators)
    return (str(body["signer"]), None) if why is None else (None, why)
