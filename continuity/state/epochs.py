"""Fencing epochs: a monotonic token per service that makes a stale primary harmless.

A lease says who *should* act as primary; the epoch is what makes a primary
that missed the news (paused, partitioned, slow) unable to do damage: every role
change increments it atomically, and every role-guarded write carries the epoch
its writer was promoted with and is refused once a newer one exists. Bumps are
compare-and-set Lua scripts, so two racing failovers cannot both win, and a
redelivered fence (same service, same expected epoch) is recognised by its
marker and changes nothing.

A bump counts only once the replicas have it (:mod:`continuity.state.durability`): it is sent with ``WAIT``
and raises :class:`~continuity.state.durability.Unconfirmed` otherwise, so a Redis failover to a replica
that was behind cannot take the epoch back and let the next failover issue it twice. A redelivered bump
rewrites its marker, so its own ``WAIT`` covers the first attempt's write too. And whoever is about to *use*
an epoch (promote, before it takes the lease and starts the service) confirms it again with
:func:`confirm_epoch`: a redelivered fence step that found its marker skips the bump, and its wait with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from continuity.errors import ContinuityError
from continuity.state import keys
from continuity.state.durability import run_with_wait
from continuity.state.scripts import Script


class StaleEpoch(ContinuityError):
    """The epoch moved on: someone else changed the role first, or the writer was fenced."""

    def __init__(self, service: str, have: int, current: int) -> None:
        self.service = service
        self.have = have
        self.current = current
        super().__init__(f"{service}: epoch {have} is stale (current epoch is {current})")


# KEYS[1]=epoch KEYS[2]=marker ('' for none) KEYS[3]=lease ('' for none); ARGV[1]=expected ARGV[2]=candidate
# returns {new_epoch, 1} when this call bumped, {new_epoch, 0} for a redelivery, {current, -1} when stale,
# {current, -2} when another node holds a live lease (checked in the same script, so a holder cannot slip in
# between "the lease is gone" and "the epoch moved")
_BUMP = Script("epoch.bump", """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local expected = tonumber(ARGV[1])
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[2], redis.call('GET', KEYS[2]))
  return {expected + 1, 0}
end
if cur ~= expected then
  return {cur, -1}
end
if KEYS[3] ~= '' then
  local raw = redis.call('GET', KEYS[3])
  if raw then
    local ok, l = pcall(cjson.decode, raw)
    if ok and type(l) == 'table' and l.node and l.node ~= ARGV[2] then
      return {cur, -2}
    end
  end
end
local new = redis.call('INCR', KEYS[1])
if KEYS[2] ~= '' then
  redis.call('SET', KEYS[2], tostring(new))
end
return {new, 1}
""")

# KEYS[1]=epoch; ARGV[1]=epoch the writer holds. 1 when current, else the current epoch negated - 1.
_CHECK = Script("epoch.check", """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur == tonumber(ARGV[1]) then return 1 end
return -cur - 1
""")


# KEYS[1]=epoch; ARGV[1]=epoch about to be used. Rewritten as it is (a write, so a WAIT after it covers it and
# everything before it): 1; else the current epoch negated - 1 (it moved, or a failover lost it).
_TOUCH = Script("epoch.touch", """
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], cur)
  return 1
end
return -tonumber(cur or '0') - 1
""")


def confirm_epoch(client: Any, service: str, epoch: int) -> None:
    """Before acting on ``epoch``: it is still current and on the replicas.

    Raises :class:`StaleEpoch` when the epoch moved on (or a Redis failover lost it: then it was never
    confirmed, and nobody acted on it), :class:`~continuity.state.durability.Unconfirmed` when the replicas
    did not acknowledge in time (retry).
    """
    (res,), confirmation = run_with_wait(client, lambda pipe: _TOUCH(
        client, keys=[keys.epoch(service)], args=[int(epoch)], pipe=pipe))
    if int(res) != 1:
        raise StaleEpoch(service, int(epoch), -int(res) - 1)
    confirmation.require(f"{service}: epoch {int(epoch)}")


def current_epoch(client: Any, service: str) -> int:
    value = client.get(keys.epoch(service))
    return int(value) if value is not None else 0


class LeaseHeld(ContinuityError):
    """Another node still holds the role's lease: the epoch must not move yet."""


def bump_epoch(client: Any, service: str, expected: int, marker: str | None = None,
               candidate: str | None = None) -> int:
    """Move ``service`` from epoch ``expected`` to ``expected + 1``; returns the new epoch.

    With ``marker`` (a :func:`keys.step_done` key) the bump is idempotent: a
    retry after a crash between the bump and the acknowledgement returns the same
    epoch instead of bumping twice. With ``candidate`` the bump also refuses
    (:class:`LeaseHeld`) while any other node holds the service's lease. Raises
    :class:`StaleEpoch` if the epoch is no longer ``expected``, and
    :class:`~continuity.state.durability.Unconfirmed` if the replicas did not confirm the bump in time (call
    again with the same marker: the retry changes nothing and waits again).
    """
    lease_key = keys.lease(service) if candidate is not None else ""
    (res,), confirmation = run_with_wait(client, lambda pipe: _BUMP(
        client, keys=[keys.epoch(service), marker or "", lease_key], args=[int(expected), candidate or ""],
        pipe=pipe))
    new, status = res
    if int(status) == -1:
        raise StaleEpoch(service, int(expected), int(new))
    if int(status) == -2:
        raise LeaseHeld(f"{service}: another node holds the lease")
    confirmation.require(f"{service}: epoch {int(new)}")
    return int(new)


def check_epoch(client: Any, service: str, epoch: int) -> None:
    """Raise :class:`StaleEpoch` unless ``epoch`` is the service's current epoch (one round trip, atomic)."""
    result = int(_CHECK(client, keys=[keys.epoch(service)], args=[int(epoch)]))
    if result != 1:
        raise StaleEpoch(service, int(epoch), -result - 1)


def is_current(client: Any, service: str, epoch: int) -> bool:
    try:
        check_epoch(client, service, epoch)
    except StaleEpoch:
        return False
    return True


def read_many(client: Any, services: Iterable[str]) -> dict[str, int]:
    """The current epoch of each service (0 when never placed), in one ``MGET``."""
    svcs = list(services)
    values = client.mget([keys.epoch(s) for s in svcs]) if svcs else []
    return {s: int(v) if v else 0 for s, v in zip(svcs, values, strict=True)}
