"""Short-lived locks in Redis: one holder at a time, and a dead holder frees the lock by itself.

Every lock is a key set with ``SET NX PX`` to a random token; only the holder's token can refresh or delete it
(:data:`_LOCK_OP`, compare-and-act in one script), so a holder that outlived its TTL can never release or extend
the lock someone else took since. Used for failover steps (``failover:step:<service>:<epoch>:<step>:lock``: a
redelivered step waits for the running copy instead of racing it).

Operations and their guarantees:

- :func:`try_lock` — one attempt; the token when taken, else None.
- :func:`release` — deletes the key only while it still holds our token.
- :func:`held` — context manager: waits up to ``wait`` seconds for the lock, keeps it alive from a refresher
  thread (so a long holder keeps it, a holder killed with its process frees it within ``ttl``), releases it
  on exit; raises :class:`LockTimeout` when the wait runs out.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

from continuity.errors import ContinuityError
from continuity.state.scripts import Script

log = logging.getLogger("continuity.locks")

# KEYS[1]=lock ARGV[1]=token ARGV[2]=ttl_ms (refresh) | no ARGV[2] (release) -> 1 done | 0 not ours
_LOCK_OP = Script("lock.op", """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
""")


class LockTimeout(ContinuityError):
    """Somebody else held the lock for longer than we were willing to wait."""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def try_lock(client: Any, key: str, ttl: float) -> str | None:
    """Take ``key`` for ``ttl`` seconds if nobody holds it; the token to release it with, else None."""
    token = secrets.token_hex(8)
    return token if client.set(key, token, nx=True, px=_ms(ttl)) else None


def release(client: Any, key: str, token: str) -> bool:
    """Delete ``key`` if it still holds ``token``; never raises (an unreleased lock expires on its own)."""
    try:
        return bool(int(_LOCK_OP(client, keys=[key], args=[token])))
    except Exception as exc:  # noqa: BLE001 - it expires on its own
        log.warning("could not release lock %s: %s", key, exc)
        return False


@contextlib.contextmanager
def held(client: Any, key: str, ttl: float = 3.0, wait: float = 120.0, poll: float = 0.05) -> Iterator[None]:
    """Hold ``key`` for the duration of the block (see the module docstring)."""
    deadline = time.monotonic() + wait
    token = try_lock(client, key, ttl)
    while token is None:
        if time.monotonic() > deadline:
            raise LockTimeout(f"another holder kept {key} for {wait:.0f}s")
        time.sleep(poll)
        token = try_lock(client, key, ttl)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(ttl / 3):
            try:
                _LOCK_OP(client, keys=[key], args=[token, _ms(ttl)])
            except Exception:  # noqa: BLE001 - a missed refresh only shortens the lock
                pass

    t = threading.Thread(target=refresh, daemon=True, name="continuity-lock-refresh")
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(1.0)
        release(client, key, token)
