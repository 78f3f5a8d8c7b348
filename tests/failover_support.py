"""Helpers for the failover tests: a fast test fleet on free ports, service cleanup, pulse checks."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import yaml

from continuity.redisd import free_port
from tests.helpers import ROOT

HOOK = ["{python}", "-m", "continuity.sample.ledger_service"]


def make_blueprint(tmp_path: Path, services: tuple[str, ...] = ("ledger",), **policy: str) -> Path:
    """The sample fleet cut down to ``services``, on free ports (tests never collide with a running demo)."""
    doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    pol = {"heartbeat_interval": "0.5s", "lease_ttl": "2s", "lease_margin": "0.5s", "suspect_after": "1s",
           "dead_after": "1.5s", "failover_cooldown": "30s", "tilt_gap": "3s", "tilt_grace": "5s"}
    pol.update(policy)
    doc["policy"].update(pol)
    for dom in list(doc["domains"]):
        svcs = doc["domains"][dom]["services"]
        for sid in list(svcs):
            if sid not in services:
                del svcs[sid]
            else:
                svcs[sid]["depends_on"] = [d for d in svcs[sid].get("depends_on", []) if d in services]
                if "port" in svcs[sid]:
                    svcs[sid]["port"] = _free_block()
        if not svcs:
            del doc["domains"][dom]
    path = tmp_path / "blueprint.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _free_block() -> int:
    """A base port p such that p, p+100 and p+200 (the node offsets) are all free right now."""
    for _ in range(200):
        p = free_port()
        if p + 200 < 65535 and all(_is_free(p + off) for off in (100, 200)):
            return p
    raise RuntimeError("no free port block")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def service_pid(state: Path, node: str, service: str) -> int | None:
    try:
        return int((state / "nodes" / node / service / "service.pid").read_text())
    except (OSError, ValueError):
        return None


def kill_services(state: Path) -> None:
    """Teardown: SIGKILL every sample service started under this test's state dir."""
    for pidfile in state.glob("nodes/*/*/service.pid"):
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def pulse_events(state: Path, kind_suffix: str | None = None) -> list[dict[str, Any]]:
    out = []
    path = state / "pulse_history.jsonl"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if kind_suffix is None or ev["kind"].endswith(kind_suffix):
            out.append(ev)
    return out
