"""One connection factory for sentinel:// URLs, against real sentinels: sync, asyncio, the master's address,
what the sentinels say during a failover, and the drills' proxy following a promotion."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.drills.proxy import LinkProxy, master_resolver
from continuity.redisd import connect, connect_async, no_retry, sentinel_report, server_address
from tests.helpers import wait_for
from tests.sentinel_support import SentinelCluster, sentinel_binary

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sentinel_binary() is None, reason="redis-sentinel not installed")]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    c = SentinelCluster(tmp_path / "redis").start()
    yield c
    c.stop()


def test_every_client_of_the_factory_follows_a_promotion(cluster: SentinelCluster) -> None:
    sync = connect(cluster.url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=no_retry())
    sync.set("k", "before")
    first = server_address(cluster.url)
    assert first == ("127.0.0.1", cluster.master_port())
    assert not sentinel_report(cluster.url, first).failing_over

    old, _ = cluster.kill_master()
    wait_for(lambda: sentinel_report(cluster.url, first).failing_over, timeout=20,
             what="the sentinels reporting the master down")
    new, _ = cluster.wait_promoted(old)
    assert server_address(cluster.url) == ("127.0.0.1", new)
    wait_for(lambda: sync.get("k") == "before", timeout=20, what="the sync client on the new master")

    async def through_async_and_proxy() -> tuple[str, str]:
        client = connect_async(cluster.url, socket_timeout=1, socket_connect_timeout=1)
        value = await client.get("k")
        await client.aclose()
        proxy = LinkProxy("127.0.0.1", 0, "", 0, resolve=master_resolver(cluster.url))
        await proxy.start()
        via = await asyncio.to_thread(lambda: connect(f"redis://127.0.0.1:{proxy.listen_port}/0",
                                                      socket_timeout=2).get("k"))
        await proxy.close()
        return value, via

    assert asyncio.run(through_async_and_proxy()) == ("before", "before")
