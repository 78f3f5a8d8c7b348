"""The drills' Redis-link proxy passes a Redis outage through as what it is, and a cut link as a cut link.

The node agent rides out "Redis is down" (connection refused) and demotes when "cut off" (timeouts); a node
behind the proxy must see the same as one connected directly, or a Redis restart would demote it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from continuity.drills.proxy import LinkProxy
from continuity.redisd import RedisServer, connect, no_retry, symptom_of
from continuity.state.links import LinkFault
from tests.helpers import wait_for


@pytest.fixture
def proxied(own_redis: RedisServer) -> Iterator[tuple[LinkProxy, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    proxy = LinkProxy("127.0.0.1", 0, "127.0.0.1", own_redis.port)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
    yield proxy, loop

    async def shutdown() -> None:
        await proxy.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _symptom(client) -> str:
    try:
        client.ping()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - what the agent would see
        return symptom_of(exc)


def test_a_redis_restart_reads_as_refused_through_the_proxy(own_redis, proxied) -> None:
    proxy, _ = proxied
    client = connect(f"redis://127.0.0.1:{proxy.listen_port}/0", socket_timeout=0.5, socket_connect_timeout=0.5,
                     retry=no_retry())
    assert client.ping()
    own_redis.kill()
    # the open connection breaks (reset); from then on the proxy refuses, as the dead server does
    wait_for(lambda: _symptom(client) == "refused", timeout=10, what="the proxy to refuse while Redis is down")
    assert proxy.refusing
    own_redis.restart()
    wait_for(lambda: _symptom(client) == "ok", timeout=10, what="the proxy to listen again on its port")
    assert not proxy.refusing


def test_a_cut_link_reads_as_cut_off(proxied) -> None:
    proxy, loop = proxied
    client = connect(f"redis://127.0.0.1:{proxy.listen_port}/0", socket_timeout=0.3, socket_connect_timeout=0.3,
                     retry=no_retry())
    assert client.ping()
    loop.call_soon_threadsafe(proxy.apply, LinkFault(delay_ms=60_000))
    wait_for(lambda: _symptom(client) == "timeout", timeout=10, what="a blackholed link timing out")
    loop.call_soon_threadsafe(proxy.apply, LinkFault(drop=True))
    assert wait_for(lambda: (s := _symptom(client)) in ("reset", "other") and s, timeout=10,
                    what="a dropped link") != "refused"
