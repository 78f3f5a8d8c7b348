"""Where the project's files and runtime state live.

Everything is resolved against one root ($CONTINUITY_ROOT, else the current
directory) so that workers, beat, the CLI and tests started from elsewhere all
agree on which ops/ files and which .continuity/ state they mean.
"""

from __future__ import annotations

import os
from pathlib import Path

from continuity import settings


def root() -> Path:
    return Path(settings.ROOT.get() or os.getcwd()).resolve()


def state_dir() -> Path:
    """Runtime state (redis data, pulse file, spool, routes, node sandboxes); never committed."""
    return Path(settings.STATE.get() or root() / ".continuity")


def last_good(name: str) -> Path:
    """Where the last copy of a config file that loaded is kept (see :mod:`continuity.config_watch`)."""
    return state_dir() / "last-good" / name


def blueprint_path() -> Path:
    return Path(settings.BLUEPRINT.get() or root() / "ops" / "blueprint.yml")


def backup_config_path() -> Path:
    return Path(settings.BACKUP_CONFIG.get() or root() / "ops" / "backup" / "continuity.yml")


def scenarios_path() -> Path:
    return Path(settings.SCENARIOS.get() or root() / "ops" / "drills" / "continuity_scenarios.yaml")


def stewards_path() -> Path:
    return Path(settings.STEWARDS.get() or root() / "ops" / "stewards.yml")


def notifications_path() -> Path:
    return Path(settings.NOTIFICATIONS.get() or root() / "ops" / "notifications.yml")


def pulse_file() -> Path:
    return Path(settings.PULSE_FILE.get() or state_dir() / "pulse_history.jsonl")


def node_dir(node_id: str) -> Path:
    """A simulated node's private disk (its service data, local snapshots)."""
    return state_dir() / "nodes" / node_id


def resolve(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root() / p
