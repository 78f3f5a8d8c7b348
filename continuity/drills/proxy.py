"""A node's Redis link, made breakable: a small asyncio TCP proxy that can delay or drop traffic.

A node's worker connects to Redis through its own proxy (passthrough while no
drill runs), so a drill can add latency to, or cut, exactly that node's link —
what a flaky radio or a partitioned rack does — without touching Redis or any
other node. Toxiproxy users cannot prove traffic went through the proxy; ours
publishes live counters (connections, bytes) and the fault it is *applying*, so
a drill checks the fault took effect and, after rollback, that no delay is left.

The fault to apply is read from ``drill:link:<node>:fault`` (:mod:`continuity.state.links`) over a direct
connection to Redis (never through the proxy itself). The runner sets it with a
TTL a little longer than the drill: if the runner dies, the fault lapses on its own.

With a ``sentinel://`` upstream the proxy asks the sentinels for the master at every new connection, so a
node behind it follows a Redis failover like one connected directly.

Outside a fault the proxy is transparent to *why* Redis cannot be reached, since the node agent judges
exactly that (:mod:`continuity.detect.outage`): while the upstream refuses connections (Redis restarting)
or no master is known (a Sentinel promotion), the proxy stops listening, so the node's connections are
refused as they would be by the server itself; it listens again, on the same port, once the upstream
answers. (Accepting and then dropping them would read as a cut link, and a node behind the proxy would
demote itself for a Redis restart that a directly connected node rides out.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from continuity import redisd
from continuity.state import links
from continuity.state.links import LinkFault

CHUNK = 64 * 1024
POLL = 0.1


@dataclass
class LinkProxy:
    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    fault: LinkFault = field(default_factory=LinkFault)
    # where to connect for each new client connection (default: the fixed upstream above)
    resolve: Callable[[], Awaitable[tuple[str, int]]] | None = None
    connections: int = 0
    total_connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    refusing: bool = False  # the upstream refuses: so do we (not listening) until it answers again
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _server: asyncio.Server | None = None
    _reopen: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        if self._server is not None:
            self._server.close()
        self._cut_all()

    async def _upstream(self) -> tuple[str, int]:
        if self.resolve is not None:
            self.upstream_host, self.upstream_port = await self.resolve()
        return self.upstream_host, self.upstream_port

    def _refuse_while_upstream_does(self) -> None:
        """Stop listening (new connections are refused by the kernel) until the upstream answers again."""
        if self.refusing or self._server is None:
            return
        self.refusing = True
        self._server.close()
        self._reopen = asyncio.get_running_loop().create_task(self._listen_when_upstream_answers())

    async def _listen_when_upstream_answers(self) -> None:
        while True:
            await asyncio.sleep(POLL / 2)
            try:
                _, probe = await asyncio.open_connection(*await self._upstream())
            except Exception:  # noqa: BLE001 - still down
                continue
            probe.close()
            try:
                self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
            except OSError:  # the port is briefly unavailable: try again
                continue
            self.refusing = False
            return

    def apply(self, fault: LinkFault) -> None:
        """Take a new fault into effect; a partition also severs every open connection at once."""
        self.fault = fault
        if fault.drop:
            self._cut_all()

    def _cut_all(self) -> None:
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()

    def _delay(self) -> float:
        f = self.fault
        if f.delay_ms <= 0 and f.jitter_ms <= 0:
            return 0.0
        return max(0.0, f.delay_ms + random.uniform(-f.jitter_ms, f.jitter_ms)) / 1000.0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.fault.drop:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*await self._upstream())
        except Exception as exc:  # noqa: BLE001 - the upstream is down or unknown
            writer.transport.abort()
            if redisd.symptom_of(exc) in ("refused", "no-master"):
                self._refuse_while_upstream_does()
            return
        self._writers.update((writer, up_writer))
        self.connections += 1
        self.total_connections += 1
        try:
            await asyncio.gather(self._pump(reader, up_writer, "up"), self._pump(up_reader, writer, "down"),
                                 return_exceptions=True)
        finally:
            self.connections -= 1
            for w in (writer, up_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        """Forward chunks in order; each is held until its arrival time + delay (delays do not pile up)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def sender() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(sender())
        try:
            while True:
                data = await reader.read(CHUNK)
                if self.fault.drop:
                    break
                if direction == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await queue.put((time.monotonic() + self._delay(), data))
                if not data:
                    break
            await task
        finally:
            task.cancel()
            with contextlib.suppress(Exception):
                writer.transport.abort() if self.fault.drop else writer.write_eof()

    def status(self, node: str) -> dict[str, Any]:
        return {"node": node, "pid": os.getpid(), "listen": f"{self.listen_host}:{self.listen_port}",
                "upstream": f"{self.upstream_host}:{self.upstream_port}", "delay_ms": self.fault.delay_ms,
                "jitter_ms": self.fault.jitter_ms, "drop": int(self.fault.drop), "connections": self.connections,
                "total_connections": self.total_connections, "refusing": int(self.refusing),
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down, "updated": time.time()}


async def _control_loop(proxy: LinkProxy, node: str, control_url: str) -> None:
    client = redisd.connect_async(control_url, socket_timeout=1, socket_connect_timeout=1)
    while True:
        try:
            proxy.apply(await links.pull_fault(client, node))
            await links.push_status(client, node, proxy.status(node))
        except Exception:  # noqa: BLE001 - Redis restarting: keep forwarding, keep the last fault
            pass
        await asyncio.sleep(POLL)


def master_resolver(upstream_url: str) -> Callable[[], Awaitable[tuple[str, int]]] | None:
    """For a ``sentinel://`` upstream: the current master's address, asked of the sentinels; else None."""
    if redisd.parse_sentinel(upstream_url) is None:
        return None

    async def resolve() -> tuple[str, int]:
        return await asyncio.to_thread(redisd.server_address, upstream_url, 0.5)

    return resolve


async def serve(node: str, listen: str, upstream_url: str, port_file: str | None = None) -> None:
    host, _, port = listen.rpartition(":")
    up_host, up_port = ("", 0) if redisd.parse_sentinel(upstream_url) else redisd.server_address(upstream_url)
    proxy = LinkProxy(host or "127.0.0.1", int(port or 0), up_host, up_port,
                      resolve=master_resolver(upstream_url))
    await proxy.start()
    if port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(proxy.listen_port))
        os.replace(tmp, port_file)
    await _control_loop(proxy, node, upstream_url)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m continuity.drills.proxy",
                                 description="Redis-link proxy for one node (latency and partition drills).")
    ap.add_argument("--node", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--upstream", required=True, help="redis:// (or sentinel://) URL of the real server")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    args = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.node, args.listen, args.upstream, args.port_file))


if __name__ == "__main__":
    main()
