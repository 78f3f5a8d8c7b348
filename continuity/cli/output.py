"""Shared output helpers so every read command offers the same ``--json`` contract."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def emit_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (stable key order, one document, trailing newline)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
