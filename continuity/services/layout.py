"""Where a service's node-local files live, shared by the failover steps, the backup engine and the sample service.

Kept import-light on purpose: the sample service imports it at start-up, and
its start time is part of every failover's recovery time.
"""

from __future__ import annotations

from pathlib import Path

from continuity import paths

# files that describe a running instance, not its data: never copied to another node
RUNTIME_FILES = frozenset({"service.pid", "service.json", "service.log", "service.lock",
                           "epoch.max"})  # each node's own epoch floor (sample service): never copied


def service_dir(node: str, service: str) -> Path:
    return paths.node_dir(node) / service


def routes_file() -> Path:
    """The routes clients read when they cannot (or should not) talk to Redis."""
    return paths.state_dir() / "routes.json"
