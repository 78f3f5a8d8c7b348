"""``continuity pulse tail``: the newest events, from the Redis Stream when it answers, else the history file.

A module of its own (see :mod:`continuity.cli.pulse`) because it is the pulse
command that needs redis-py.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer

from continuity import paths, settings
from continuity.cli.output import emit_json
from continuity.errors import UsageError
from continuity.pulse import PREFIX, read_from
from continuity.redisd import connect
from continuity.state import pulse_stream

commands = typer.Typer()

FILE_POLL_S = 0.25
STREAM_BLOCK_MS = 1000
STREAM_BATCH = 200


def kind_matcher(prefix: str | None) -> Callable[[dict[str, Any]], bool]:
    """``--kind failover`` and ``--kind continuity_layer.failover`` mean the same thing."""
    if not prefix:
        return lambda ev: True
    short = prefix[len(PREFIX):] if prefix.startswith(PREFIX) else prefix

    def match(ev: dict[str, Any]) -> bool:
        kind = str(ev.get("kind", ""))
        return kind.startswith(PREFIX + short) or kind.startswith(short)

    return match


def format_event(ev: dict[str, Any]) -> str:
    """One line per event: time, kind, where, then the data; stable enough to grep."""
    try:
        when = dt.datetime.fromtimestamp(float(ev.get("ts", 0)), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (TypeError, ValueError, OverflowError, OSError):
        when = str(ev.get("ts"))
    kind = str(ev.get("kind", "?"))
    parts = [when, kind[len(PREFIX):] if kind.startswith(PREFIX) else kind]
    for field in ("node", "service", "epoch"):
        if ev.get(field) is not None:
            parts.append(f"{field}={ev[field]}")
    if ev.get("data"):
        parts.append(json.dumps(ev["data"], sort_keys=True, separators=(",", ":"), default=str))
    return "  ".join(parts)


def _stream_client() -> Any | None:
    """A client when the Redis URL variable is set and answers; otherwise None (read the file)."""
    url = settings.REDIS_URL.get()
    if not url:
        return None
    try:
        client = connect(url, socket_timeout=STREAM_BLOCK_MS / 1000 + 5, socket_connect_timeout=2)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - any failure means: fall back to the local file
        typer.echo(f"continuity: Redis unreachable ({exc.__class__.__name__}); reading {paths.pulse_file()}",
                   err=True)
        return None


def _parse_entry(fields: dict[str, str]) -> dict[str, Any] | None:
    try:
        ev = json.loads(fields["event"])
    except (KeyError, TypeError, ValueError):
        return None
    return ev if isinstance(ev, dict) else None


def stream_tail(client: Any, n: int, match: Callable[[dict[str, Any]], bool]) -> tuple[list[dict[str, Any]], str]:
    """The newest ``n`` matching events (oldest first) and the stream id to follow from.

    Walks backwards in batches so a rare kind is found even when thousands of
    other events came after it.
    """
    found: list[dict[str, Any]] = []
    newest = pulse_stream.last_id(client)  # follow from here, even when nothing is shown (-n 0)
    upper = "+"
    while len(found) < n:
        batch = pulse_stream.before(client, upper, STREAM_BATCH)
        if not batch:
            break
        for _sid, fields in batch:
            ev = _parse_entry(fields)
            if ev is not None and match(ev):
                found.append(ev)
                if len(found) == n:
                    break
        if len(batch) < STREAM_BATCH:
            break
        upper = "(" + batch[-1][0]
    found.reverse()
    return found, newest


def _file_tail(path: Path, n: int, match: Callable[[dict[str, Any]], bool]) -> tuple[list[dict[str, Any]], int]:
    events, offset = read_from(path, 0)
    return list(deque((ev for ev in events if match(ev)), maxlen=n)) if n else [], offset


class _Printer:
    def __init__(self, json_out: bool, follow: bool) -> None:
        self.json_out = json_out
        self.follow = follow

    def first(self, events: list[dict[str, Any]]) -> None:
        if self.json_out and not self.follow:
            emit_json(events)
        else:
            self.more(events)

    def more(self, events: Iterable[dict[str, Any]]) -> None:
        for ev in events:
            line = json.dumps(ev, sort_keys=True, default=str) if self.json_out else format_event(ev)
            typer.echo(line)


@commands.command("tail")
def tail(
    lines: int = typer.Option(20, "-n", "--lines", min=0, help="How many recent events to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until Ctrl-C."),
    json_out: bool = typer.Option(False, "--json", help="A JSON array; with --follow, one JSON object per line."),
    kind: str | None = typer.Option(None, "--kind", help="Only kinds starting with this (e.g. failover, drill.)."),
    file: Path | None = typer.Option(None, "--file", help="Read this history file instead of the Redis Stream."),
) -> None:
    """Show the most recent pulse events, from the Redis Stream if reachable, else from the history file."""
    match = kind_matcher(kind)
    out = _Printer(json_out, follow)
    client = None if file is not None else _stream_client()
    path = file if file is not None else paths.pulse_file()
    if file is not None and file.is_dir():
        raise UsageError(f"{file}: is a directory, expected a pulse history file")
    if file is not None and not file.exists():
        raise UsageError(f"{file}: file not found")
    try:
        if client is not None:
            events, last_id = stream_tail(client, lines, match)
            out.first(events)
            while follow:
                for sid, fields in pulse_stream.after(client, last_id, STREAM_BLOCK_MS, STREAM_BATCH):
                    last_id = sid
                    ev = _parse_entry(fields)
                    if ev is not None and match(ev):
                        out.more([ev])
        else:
            if not path.exists() and not follow:
                typer.echo(f"continuity: no pulse history at {path} yet", err=True)
            events, offset = _file_tail(path, lines, match)
            out.first(events)
            while follow:
                time.sleep(FILE_POLL_S)
                new, offset = read_from(path, offset)
                out.more(ev for ev in new if match(ev))
    except KeyboardInterrupt:
        # Ctrl-C is how a follower is meant to stop: not an error
        raise typer.Exit(0) from None
