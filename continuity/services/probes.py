"""Service health probes the node agent runs locally: is the thing this node is primary of actually up?

A node can be alive while its service is not; the heartbeat carries each
service's probe result so the continuity mode and the failover verify step see
the difference. Every probe has a hard timeout and never raises: a probe that
hangs or crashes is an unhealthy service, not a stuck agent (a stuck agent
would stop heartbeating and get the whole node failed over).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from continuity import paths
from continuity.blueprint import Blueprint, Probe
from continuity.services.hooks import HookError, placeholder_values, render, render_text


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    detail: str
    duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "detail": self.detail[:200], "duration": round(self.duration, 4)}


def _process(probe: Probe, v: Mapping[str, str], now: Callable[[], float]) -> ProbeResult:
    pidfile = paths.resolve(render_text(probe.pidfile or "", v))
    try:
        pid = int(pidfile.read_text().strip())
    except FileNotFoundError:
        return ProbeResult(False, f"no pidfile {pidfile}")
    except (ValueError, OSError) as exc:
        return ProbeResult(False, f"unreadable pidfile {pidfile}: {exc}")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ProbeResult(False, f"process {pid} is not running")
    except PermissionError:
        pass  # exists, owned by someone else
    return ProbeResult(True, f"process {pid} running")


def _tcp(probe: Probe, v: Mapping[str, str], now: Callable[[], float]) -> ProbeResult:
    host = render_text(probe.host or "127.0.0.1", v)
    port = int(render_text(str(probe.port), v))
    try:
        with socket.create_connection((host, port), timeout=probe.timeout):
            return ProbeResult(True, f"tcp {host}:{port} accepts")
    except OSError as exc:
        return ProbeResult(False, f"tcp {host}:{port}: {exc.strerror or exc}")


def _http(probe: Probe, v: Mapping[str, str], now: Callable[[], float]) -> ProbeResult:
    url = render_text(probe.url or "", v)
    if not url.startswith(("http://", "https://")):
        return ProbeResult(False, f"not an http(s) url: {url}")
    try:
        with urllib.request.urlopen(url, timeout=probe.timeout) as resp:  # noqa: S310 - scheme checked above
            code = resp.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return ProbeResult(False, f"GET {url}: {reason}")
    if 200 <= code < 300:
        return ProbeResult(True, f"GET {url}: {code}")
    return ProbeResult(False, f"GET {url}: HTTP {code}")


def _command(probe: Probe, v: Mapping[str, str], now: Callable[[], float]) -> ProbeResult:
    argv = render(probe.argv or [], v)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=probe.timeout, cwd=str(paths.root()))
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"{argv[0]} timed out after {probe.timeout:g}s")
    except OSError as exc:
        return ProbeResult(False, f"cannot run {argv[0]!r}: {exc.strerror}")
    if proc.returncode == 0:
        return ProbeResult(True, f"{argv[0]} exited 0")
    err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
    return ProbeResult(False, f"{argv[0]} exited {proc.returncode}" + (f": {err[-1]}" if err else ""))


def _file(probe: Probe, v: Mapping[str, str], now: Callable[[], float]) -> ProbeResult:
    path = paths.resolve(render_text(probe.path or "", v))
    try:
        age = now() - path.stat().st_mtime
    except FileNotFoundError:
        return ProbeResult(False, f"{path} does not exist")
    except OSError as exc:
        return ProbeResult(False, f"{path}: {exc.strerror}")
    limit = probe.max_age or 0.0
    if age <= limit:
        return ProbeResult(True, f"{path} updated {age:.1f}s ago")
    return ProbeResult(False, f"{path} is stale: updated {age:.1f}s ago (max {limit:g}s)")


_KINDS: dict[str, Callable[[Probe, Mapping[str, str], Callable[[], float]], ProbeResult]] = {
    "process": _process, "tcp": _tcp, "http": _http, "command": _command, "file": _file,
}


def run_probe(probe: Probe, values: Mapping[str, str], now: Callable[[], float] = time.time) -> ProbeResult:
    """Run one probe with its placeholders filled; never raises."""
    started = time.monotonic()
    try:
        result = _KINDS[probe.kind](probe, values, now)
    except HookError as exc:
        result = ProbeResult(False, f"bad probe: {exc}")
    except Exception as exc:  # noqa: BLE001 - a probe bug must read as "unhealthy", not kill the agent
        result = ProbeResult(False, f"probe error: {type(exc).__name__}: {exc}")
    return ProbeResult(result.healthy, result.detail, time.monotonic() - started)


def probe_service(bp: Blueprint, service: str, node: str, epoch: int | None,
                  now: Callable[[], float] = time.time) -> ProbeResult:
    """Health of ``service`` as run on ``node``; a service without a probe is taken as healthy while held."""
    probe = bp.services[service].spec.probe
    if probe is None:
        return ProbeResult(True, "no probe declared")
    try:
        values = placeholder_values(bp, service, node, epoch)
    except HookError as exc:
        return ProbeResult(False, f"bad probe: {exc}")
    return run_probe(probe, values, now)
