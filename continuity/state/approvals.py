"""Steward approvals as Redis holds them: ``approvals:<subject>``, a hash approver key id -> signed statement (JSON).

Redis is only the mailbox between the steward who approves and the process that needs the approval: a reader
gets the raw statements and :meth:`continuity.stewardship.Stewardship.tally` verifies each against the steward
keys declared in ops/ before it counts. Writing here directly (anyone with Redis access can) adds nothing that
counts.

- :func:`put` — one statement per approver (a new one replaces that approver's old one); the key's TTL is
  extended, never shortened, to the longest statement's expiry, atomically (a script), so approvals given at the
  same moment by two stewards cannot cut each other's lifetime.
- :func:`read` — the raw statements for a subject (strings, unparsed: parsing is the verifier's job).
- :func:`revoke` — drop one approver's statement, or all of a subject's.
"""

from __future__ import annotations

from typing import Any

from continuity.state import keys
from continuity.state.scripts import Script

# KEYS[1]=approvals hash ARGV[1]=approver ARGV[2]=statement ARGV[3]=ms until it expires
_PUT = Script("approvals.put", """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
local want = tonumber(ARGV[3])
if ttl < want then redis.call('PEXPIRE', KEYS[1], want) end
return 1
""")


def put(client: Any, subject: str, approver: str, statement: str, ttl: float) -> None:
    _PUT(client, [keys.approvals(subject)], [approver, statement, max(1, int(ttl * 1000))])


def read(client: Any, subject: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in client.hvals(keys.approvals(subject))]


def revoke(client: Any, subject: str, approver: str | None = None) -> int:
    if approver is None:
        return int(client.delete(keys.approvals(subject)))
    return int(client.hdel(keys.approvals(subject), approver))
