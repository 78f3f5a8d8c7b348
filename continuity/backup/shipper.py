"""The node's log shipper: every ``ship_log`` seconds, the ledgers this node is primary of go to the repository.

Who ships, and why there: the node that *writes* a ledger, on its own data only.
For a set protecting a service (``{kind: service}``) that is the service's
lease holder, read each tick (one round trip for every service); for a set with
a plain ``{kind: ledger, path: ...}`` source it is the set's ``node``. A standby
never ships: its copy is behind its primary's by the replication lag, and
shipping it would only add a second, older branch. When the role moves, the new
primary's shipper finds in the repository where the log ends and goes on from
the last position its own ledger holds (:func:`continuity.backup.logship.resume_point`);
the segments carry the epoch, so a restore follows the new primary where the two
histories differ. A lease read from Redis is trusted only to decide whether to
*send* this node's own data, never to accept anyone else's.

It runs as a process of its own (``python -m continuity.backup.shipper --node N``),
started and restarted by the node's worker (``workers/shipping.py``) like the
replicator and for the same reasons: file I/O, sealing and the repository's
key derivation never take the GIL from the node agent's heartbeats, and it can
be killed alone (the tests kill it -9 mid-ship; it resumes from the repository).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuity.backup.config import LoadedConfig
from continuity.backup.logship import LedgerShipper, ShipResult
from continuity.backup.repository import Repository
from continuity.services.layout import service_dir

log = logging.getLogger("continuity.backup.shipper")
PARENT_CHECK = 0.5


@dataclass(frozen=True)
class ShipJob:
    """One ledger of one set that this node ships now (``epoch``: of the service role it holds, if any)."""

    set_name: str
    source: str
    path: str
    epoch: int | None = None


@dataclass(frozen=True)
class Holder:
    node: str
    epoch: int


def shipping_sets(cfg: LoadedConfig) -> dict[str, float]:
    """Sets that ship their ledger log, and how often (seconds)."""
    return {name: float(s.ship_log) for name, s in cfg.sets.items() if s.ship_log}


def concerns(cfg: LoadedConfig, node: str, placements: Mapping[str, tuple[str, ...]]) -> bool:
    """Could this node ever ship (a shipping set's node, or placed for a service such a set protects)?"""
    for name in shipping_sets(cfg):
        s = cfg.sets[name]
        if s.node == node and any(src.kind == "ledger" for src in s.sources):
            return True
        if any(node in placements.get(svc, ()) for svc in s.services()):
            return True
    return False


def ship_jobs(cfg: LoadedConfig, node: str, holders: Mapping[str, Holder | None]) -> list[ShipJob]:
    """What this node ships now (pure): its plain ledger sources, and the ledgers of services it holds."""
    jobs: list[ShipJob] = []
    for name in sorted(shipping_sets(cfg)):
        s = cfg.sets[name]
        for src in s.sources:
            if src.kind == "ledger" and s.node == node and src.path:
                path = cfg.resolve(src.path)
                jobs.append(ShipJob(name, src.name or os.path.basename(os.path.normpath(path)), path))
            elif src.kind == "service" and src.service:
                holder = holders.get(src.service)
                if holder is None or holder.node != node:
                    continue
                for kind, fname in (cfg.service_data or {}).get(src.service, []):
                    if kind == "ledger":
                        jobs.append(ShipJob(name, fname, str(service_dir(node, src.service) / fname),
                                            holder.epoch))
    return jobs


class ShipLoop:
    """One tick: find this node's jobs, ship each; keeps a shipper per job (and a repository per set) across ticks.

    ``holders`` reads the lease of every service the shipping sets protect (it raises when Redis is away: then
    nothing of a service is shipped this tick, as a node that cannot confirm its role must not act on it).
    """

    def __init__(self, cfg: LoadedConfig, node: str, holders: Callable[[list[str]], Mapping[str, Holder | None]],
                 open_repo: Callable[[str], Repository], on_ship: Callable[[ShipJob, ShipResult], None] | None = None,
                 ) -> None:
        self.cfg = cfg
        self.node = node
        self.holders = holders
        self.open_repo = open_repo
        self.on_ship = on_ship
        self.shippers: dict[ShipJob, LedgerShipper] = {}
        self.repos: dict[str, Repository] = {}
        self.warned: dict[ShipJob, str] = {}  # the last problem logged per job: said once, not every second

    def services(self) -> list[str]:
        return sorted({svc for name in shipping_sets(self.cfg) for svc in self.cfg.sets[name].services()})

    def tick(self) -> list[tuple[ShipJob, ShipResult]]:
        services = self.services()
        try:
            held = self.holders(services) if services else {}
        except Exception as exc:  # noqa: BLE001 - Redis away: plain ledger sets still ship
            log.warning("log shipper %s: cannot read leases: %s", self.node, exc)
            held = {}
        jobs = ship_jobs(self.cfg, self.node, held)
        for gone in set(self.shippers) - set(jobs):
            self.shippers.pop(gone).close()
        done: list[tuple[ShipJob, ShipResult]] = []
        for job in jobs:
            try:
                shipper = self.shippers.get(job)
                if shipper is None:
                    repo = self.repos.get(job.set_name) or self.open_repo(job.set_name)
                    self.repos[job.set_name] = repo
                    shipper = self.shippers[job] = LedgerShipper(repo, job.set_name, job.source, Path(job.path),
                                                                 self.node)
                res = shipper.ship(epoch=job.epoch)
            except Exception as exc:  # noqa: BLE001 - one set's repository away must not stop the others
                if self.warned.get(job) != str(exc):
                    log.warning("log shipper %s: %s/%s: %s", self.node, job.set_name, job.source, exc)
                self.warned[job] = str(exc)
                self.shippers.pop(job, None)
                self.repos.pop(job.set_name, None)
                continue
            self.warned.pop(job, None)
            if res is not None and res.segments:
                done.append((job, res))
                if self.on_ship is not None:
                    self.on_ship(job, res)
        return done

    def close(self) -> None:
        for s in self.shippers.values():
            s.close()
        self.shippers.clear()


def run(loop: ShipLoop, interval: float, stop: threading.Event, parent: int = 0) -> None:
    """Tick every ``interval`` seconds (measured from each tick's start) until ``stop`` or the parent is gone."""
    next_at = time.monotonic()
    while not stop.is_set():
        loop.tick()
        next_at = max(next_at + interval, time.monotonic())
        while not stop.wait(min(PARENT_CHECK, max(0.0, next_at - time.monotonic()))):
            if parent and os.getppid() != parent:
                stop.set()  # the worker is gone: a node's shipper never outlives its worker
            if time.monotonic() >= next_at:
                break
    loop.close()


def main(argv: list[str] | None = None) -> int:
    from continuity import paths, settings
    from continuity.backup.api import load_fleet_backup_config, set_repository
    from continuity.errors import ContinuityError

    parser = argparse.ArgumentParser(prog="python -m continuity.backup.shipper",
                                     description="Ship this node's ledger appends to the backup repository.")
    parser.add_argument("--node", default=settings.NODE.get(), help="The node (default: $CONTINUITY_NODE).")
    parser.add_argument("--parent", type=int, default=0, help="Exit when this process is gone (the worker).")
    parser.add_argument("--config", default=None, help="Backup config (default: the project's).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s shipper %(levelname)s %(message)s")
    if not args.node:
        print("shipper: no node (--node or $CONTINUITY_NODE)", file=sys.stderr)
        return 2
    try:
        cfg = load_fleet_backup_config(args.config or paths.backup_config_path(), root=paths.root())
    except (ContinuityError, OSError, ValueError) as exc:
        print(f"shipper {args.node}: {exc}", file=sys.stderr)
        return 2
    intervals = shipping_sets(cfg)
    if not intervals:
        print(f"shipper {args.node}: no backup set declares ship_log", file=sys.stderr)
        return 0
    client: Any = None

    def holders(services: list[str]) -> dict[str, Holder | None]:
        nonlocal client
        from continuity.redisd import connect
        from continuity.state import leases

        if client is None:
            client = connect(socket_timeout=1.0, socket_connect_timeout=1.0)
        found = leases.read_many(client, services)
        return {s: None if v is None else Holder(v.node, v.epoch) for s, v in found.items()}

    def on_ship(job: ShipJob, res: ShipResult) -> None:
        if client is None:
            return  # no Redis in use (plain ledger sets): the repository is the record
        from continuity.state import backups

        try:
            backups.record(client, job.set_name, {"log_shipped_time": time.time(),
                                                  "log_shipped_records": res.position.count})
        except Exception:  # noqa: BLE001 - status only: shipping goes on without Redis
            pass

    loop = ShipLoop(cfg, args.node, holders, lambda name: set_repository(cfg, name), on_ship)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(loop, min(intervals.values()), stop, args.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
