"""Shared output helpers so every read command offers the same ``--json`` contract."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    console: Console
    err_console: Console


def __getattr__(name: str) -> Any:
    """``console`` / ``err_console`` are made on first use: a ``--json`` run never pays for importing rich."""
    if name not in ("console", "err_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    made = Console(stderr=name == "err_console")
    globals()[name] = made
    return made


def emit_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (stable key order, one document, trailing newline)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
