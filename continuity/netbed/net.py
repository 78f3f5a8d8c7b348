"""The wiring of the bed's hosts: network namespaces, one bridge, a veth pair per node.

Each node gets a network namespace of its own (its ``lo`` and an ``eth0`` with
an address on a private /24); the host ends of the veth pairs hang on one
bridge in the root namespace, which holds the subnet's ``.1`` (where Redis
listens). A partition is a node's host-side veth set down: the node keeps its
own address and loopback (its services still answer its own probes) but no
packet leaves it, as when a real host's cable is pulled.

Everything here shells out to iproute2 (``ip``), needs root (CAP_NET_ADMIN and
CAP_SYS_ADMIN) and is Linux-only; :func:`unavailable` says why not, in words a
skipped test can show. The subnet choice is a pure function (:func:`pick_subnet`)
of what the machine already routes, so it is tested without touching the host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from continuity.errors import ContinuityError

NETNS_DIR = Path("/run/netns")
SUPERNET = ipaddress.IPv4Network("10.213.0.0/16")  # the bed's /24s are carved from here
NAME_OK = re.compile(r"[^A-Za-z0-9_.-]")


class NetError(ContinuityError):
    """An ``ip`` command failed, or the machine cannot host the bed."""


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; its stdout, or :class:`NetError` with ip's own message when it fails and ``check``."""
    try:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetError(f"ip {' '.join(args)}: {exc}") from None
    if check and proc.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout


def unavailable() -> str | None:
    """Why this machine cannot wire a bed (not root, no iproute2, namespaces refused), or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (ip netns, veth pairs and a tmpfs mount); run as root, as CI does"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"ctb-probe-{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except NetError as exc:
        return f"`ip netns add` is not permitted here: {exc}"
    try:
        ip("netns", "del", probe)
    except NetError as exc:
        return f"`ip netns del` failed: {exc}"
    return None


# --- naming and addressing ------------------------------------------------------------------------------------
def netns_name(bed_id: str, node: str) -> str:
    """``ctb-<bed>-<node>``: one namespace per node per bed, so two beds (two test sessions) never share one."""
    return f"ctb-{bed_id}-{NAME_OK.sub('_', node)}"[:200]


def bridge_name(bed_id: str) -> str:
    return f"ctb{bed_id}"  # interface names are at most 15 characters


def veth_name(bed_id: str, index: int) -> str:
    """The host end of node ``index``'s veth pair (the node's end is ``eth0`` inside its namespace)."""
    return f"ctv{bed_id}{index}"


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine has an address in or a route to (all tables), from ``ip -j``."""
    nets: list[ipaddress.IPv4Network] = []
    for link in json.loads(ip("-j", "-4", "addr", "show") or "[]"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def pick_subnet(used: Iterable[ipaddress.IPv4Network], taken: Iterable[str],
                rng: random.Random | None = None) -> ipaddress.IPv4Network | None:
    """A random /24 of 10.213.0.0/16 that overlaps nothing in ``used`` and is not in ``taken``; None if none is left.

    Random rather than first-free, so two beds starting at once rarely race for the
    same one (the claim file settles the rare race); overlapping a routed network would
    quietly send the bed's packets, or the machine's, to the wrong place.
    """
    used = [n for n in used if n.overlaps(SUPERNET)]
    taken = set(taken)
    free = [net for net in SUPERNET.subnets(new_prefix=24)
            if str(net) not in taken and not any(net.overlaps(u) for u in used)]
    return (rng or random).choice(free) if free else None


# --- namespaces and links -------------------------------------------------------------------------------------
def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create_bridge(name: str, address: str) -> None:
    """The bed's switch, holding ``address`` (CIDR) in the root namespace."""
    ip("link", "add", name, "type", "bridge")
    ip("addr", "add", address, "dev", name)
    ip("link", "set", name, "up")


def create_host(netns: str, veth: str, bridge: str, address: str) -> None:
    """A namespace with ``lo`` up and ``eth0`` at ``address`` (CIDR), cabled to ``bridge`` through ``veth``."""
    ip("netns", "add", netns)
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", veth, "master", bridge)
    ip("link", "set", veth, "up")
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "addr", "add", address, "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")


def set_link(veth: str, up: bool) -> None:
    """Cable in or out: the host end of a node's veth up or down."""
    ip("link", "set", veth, "up" if up else "down")


def link_is_up(veth: str) -> bool:
    try:
        return "UP" in (Path("/sys/class/net", veth, "operstate").read_text().strip().upper())
    except OSError:
        return False


def delete_link(name: str) -> None:
    if link_exists(name):
        ip("link", "del", name)


def delete_netns(name: str) -> None:
    if netns_exists(name):
        ip("netns", "del", name)


# --- processes by namespace -------------------------------------------------------------------------------------
def ns_id(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) identifying a network namespace file (``/run/netns/X`` or ``/proc/PID/ns/net``)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def netns_pids(name: str) -> set[int]:
    """Every live process in namespace ``name`` — what ``ip netns pids NAME`` prints, without a fork per call.

    A zombie has left its namespaces already, so it is not listed: what is listed can still run.
    """
    want = ns_id(NETNS_DIR / name)
    if want is None:
        return set()
    out = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and ns_id(f"/proc/{entry.name}/ns/net") == want:
            out.add(int(entry.name))
    return out
