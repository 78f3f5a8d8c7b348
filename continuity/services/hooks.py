"""Render and run service hooks (start / stop / demote) and probe URLs.

Hooks come from the blueprint as argv lists with placeholders. They are filled
in on the node that runs them (the port depends on the node's ``port_offset``,
the epoch on the failover in progress) and are executed without a shell, so a
service id or a label can never be interpreted as shell syntax. Every run has a
timeout: a hook that hangs must fail the step, not wedge the chain.

Hooks of one service on one node never overlap, whoever runs them: the node's
agent (its per-service lane), a failover step in a worker's pool process, a
drill. Each run holds an exclusive ``flock`` on the node's
``.hook-locks/<service>.lock`` (:func:`hook_lock`); a start that overlapped a stop of
the same service once left two instances serving one service on one node. A
start that cannot get the lock within its timeout fails (it is retried, or the
chain moves on); a stop or demote runs anyway after that wait, because a
primary that can never be stopped is the worse outcome.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from continuity import paths
from continuity.blueprint import HOOK_PLACEHOLDERS, Blueprint
from continuity.errors import ContinuityError

PLACEHOLDERS = HOOK_PLACEHOLDERS
LOCK_POLL = 0.05  # seconds between tries for a hook lock another process holds
LOCK_BUSY = 75  # exit code of a start refused because another hook of the service still runs (EX_TEMPFAIL)

log = logging.getLogger(__name__)


class HookError(ContinuityError):
    """A hook could not be rendered or exited non-zero."""


def service_port(bp: Blueprint, service: str, node: str) -> int | None:
    """The service's port on ``node``: simulated nodes share one host, so each shifts by its offset."""
    base = bp.services[service].spec.port
    if base is None:
        return None
    offset = bp.nodes[node].labels.get("port_offset", "0")
    try:
        return base + int(offset)
    except ValueError:
        raise HookError(f"node {node!r}: label port_offset={offset!r} is not an integer") from None


def placeholder_values(bp: Blueprint, service: str, node: str, epoch: int | None) -> dict[str, str]:
    port = service_port(bp, service, node)
    return {
        "python": sys.executable,
        "root": str(paths.root()),
        "node": node,
        "service": service,
        "port": "" if port is None else str(port),
        "epoch": "" if epoch is None else str(epoch),
        "address": bp.nodes[node].address,
    }


def render_text(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{name}`` placeholders; an unknown name is a blueprint mistake, reported by name."""
    try:
        return template.format_map(_Strict(values))
    except (ValueError, IndexError) as exc:
        raise HookError(f"cannot render {template!r}: {exc}") from None


class _Strict(dict):
    def __missing__(self, key: str) -> str:
        raise HookError(f"unknown placeholder {{{key}}} (known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})")


def render(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    return [render_text(a, values) for a in argv]


@dataclass(frozen=True)
class HookResult:
    argv: list[str]
    returncode: int
    duration: float
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(argv: Sequence[str], timeout: float = 30.0, env: Mapping[str, str] | None = None) -> HookResult:
    """Run argv (no shell) with a deadline; a timeout kills it and counts as failure (rc 124)."""
    started = time.monotonic()
    try:
        proc = subprocess.run(list(argv), env=dict(env) if env is not None else os.environ.copy(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              cwd=str(paths.root()))
        out = (proc.stdout or "") + (proc.stderr or "")
        return HookResult(list(argv), proc.returncode, time.monotonic() - started, out[-4000:])
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return HookResult(list(argv), 124, time.monotonic() - started, f"timed out after {timeout:.0f}s\n{out}"[-4000:])
    except OSError as exc:
        return HookResult(list(argv), 127, time.monotonic() - started, f"cannot run {argv[0]!r}: {exc.strerror}")


def run_service_hook(bp: Blueprint, service: str, node: str, which: str, epoch: int | None,
                     timeout: float = 30.0) -> HookResult | None:
    """Run the service's ``which`` hook on ``node``; None when the blueprint declares no such hook."""
    hooks = bp.services[service].spec.hooks
    argv = getattr(hooks, which)
    if which == "demote" and argv is None:
        argv = hooks.stop  # a service without a dedicated demote hook is demoted by stopping it
    if argv is None:
        return None
    rendered = render(argv, placeholder_values(bp, service, node, epoch))
    started = time.monotonic()
    with hook_lock(service, node, timeout) as locked:
        if not locked and which == "start":
            return HookResult(rendered, LOCK_BUSY, time.monotonic() - started,
                              f"another hook of {service} on {node} still runs after {timeout:g}s: not started")
        if not locked:
            log.warning("%s hook of %s on %s runs without the hook lock: another hook still holds it after %gs",
                        which, service, node, timeout)
        return run(rendered, timeout=timeout)


@contextmanager
def hook_lock(service: str, node: str, timeout: float) -> Iterator[bool]:
    """Hold the exclusive lock of ``service``'s hooks on ``node``; yields False if not had within ``timeout``.

    ``flock`` on a file of the node's own directory: it serializes hook runs across the agent's
    threads, worker pool processes and the CLI alike, and the kernel drops it when its holder dies,
    so a killed worker never leaves a stale lock behind. The hook's child does not inherit it.
    """
    path = paths.node_dir(node) / ".hook-locks" / f"{service}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        yield _flock(fd, time.monotonic() + timeout)
    finally:
        os.close(fd)  # releases the lock


def _flock(fd: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL)


def probe_url(bp: Blueprint, service: str, node: str, epoch: int | None = None) -> str | None:
    """The health URL of the service on ``node`` (http probes only), placeholders filled."""
    probe = bp.services[service].spec.probe
    if probe is None or probe.kind != "http" or probe.url is None:
        return None
    return render_text(probe.url, placeholder_values(bp, service, node, epoch))


def base_url(bp: Blueprint, service: str, node: str) -> str | None:
    """Where clients reach the service on ``node``: scheme://host:port of its http probe, else address:port."""
    url = probe_url(bp, service, node)
    if url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"
    port = service_port(bp, service, node)
    if port is None:
        return None
    return f"http://{bp.nodes[node].address}:{port}"
