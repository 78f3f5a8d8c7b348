"""The record of every bed on this machine, and removing a bed by its record.

Every bed writes ``/run/continuity-netbed/<id>.json`` (owner pid and start time,
subnet, bridge, namespaces, links, mount, the pids it started) before it creates
any of them, and claims its /24 with an exclusive file. So a bed whose owner was
killed -9 can be removed by name later (:func:`sweep_stale`), and a session can
check that nothing of its beds is left (:func:`leftovers`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from continuity.netbed import net
from continuity.netbed.net import NetError
from continuity.netbed.procs import kill_group, kill_netns, same_process, start_time

REGISTRY = Path("/run/continuity-netbed")


def owner() -> dict[str, Any]:
    return {"owner_pid": os.getpid(), "owner_start": start_time(os.getpid())}


def mounted(path: str) -> bool:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[4] == path for line in lines if len(line.split()) > 4)


def dismantle(plan: Mapping[str, Any]) -> list[str]:
    """Remove everything a bed's record names (processes, links, namespaces, mount, claim); what failed, in words.

    Each step runs whatever the one before it did, so one stuck piece never leaves the rest behind.
    """
    problems: list[str] = []

    def step(what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except (OSError, NetError, subprocess.SubprocessError) as exc:
            problems.append(f"{what}: {exc}")

    for host in plan.get("hosts", []):
        step(f"kill processes of {host['netns']}", kill_netns, host["netns"])
    for pid, start in plan.get("pids", []):
        if same_process(pid, start):
            step(f"kill pid {pid}", kill_group, pid, start)
    for host in plan.get("hosts", []):
        step(f"delete link {host['veth']}", net.delete_link, host["veth"])
        step(f"delete namespace {host['netns']}", net.delete_netns, host["netns"])
    step(f"delete bridge {plan.get('bridge')}", net.delete_link, plan.get("bridge", ""))
    mount = plan.get("mount")
    if mount and mounted(mount):
        step(f"unmount {mount}", _unmount, mount)
    for name in ("claim", "record"):
        if plan.get(name):
            step(f"remove {plan[name]}", lambda p: Path(p).unlink(missing_ok=True), plan[name])
    return problems


def _unmount(mount: str) -> None:
    if subprocess.run(["umount", mount], capture_output=True).returncode != 0:
        proc = subprocess.run(["umount", "-l", mount], capture_output=True, text=True)
        if proc.returncode != 0:
            raise NetError(f"umount -l {mount}: {proc.stderr.strip()}")


def leftovers(plan: Mapping[str, Any]) -> list[str]:
    """What of a bed still exists: namespaces, links, processes, the mount, its record. Empty once it is gone."""
    left = []
    for host in plan.get("hosts", []):
        if net.netns_exists(host["netns"]):
            left.append(f"namespace {host['netns']}")
        if net.link_exists(host["veth"]):
            left.append(f"link {host['veth']}")
    if plan.get("bridge") and net.link_exists(plan["bridge"]):
        left.append(f"bridge {plan['bridge']}")
    left += [f"process {pid}" for pid, start in plan.get("pids", []) if same_process(pid, start)]
    if plan.get("mount") and mounted(plan["mount"]):
        left.append(f"mount {plan['mount']}")
    left += [f"file {plan[n]}" for n in ("claim", "record") if plan.get(n) and Path(plan[n]).exists()]
    return left


def _records() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(REGISTRY.glob("*.json")) if REGISTRY.is_dir() else []:
        try:
            out.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            out.append((path, {}))
    return out


def sweep_stale() -> list[str]:
    """Remove every bed (and subnet claim) whose owning process is gone; the ids removed.

    A test run killed with -9 cannot close its bed; the next run cleans it up here,
    so namespaces and links never pile up on a CI machine.
    """
    removed = []
    for path, rec in _records():
        if rec and same_process(int(rec.get("owner_pid", 0)), rec.get("owner_start")):
            continue
        if dismantle(rec):
            continue  # try again next time; leftovers() of that bed says what is stuck
        path.unlink(missing_ok=True)
        removed.append(rec.get("id", path.stem))
    recorded = {rec.get("claim") for _, rec in _records()}
    for claim in sorted(REGISTRY.glob("subnet-*.claim")) if REGISTRY.is_dir() else []:
        try:  # a claim whose owner died before it wrote the bed's record
            owner = json.loads(claim.read_text())
        except (OSError, ValueError):
            owner = {}
        if str(claim) not in recorded and not same_process(int(owner.get("owner_pid", 0)), owner.get("owner_start")):
            claim.unlink(missing_ok=True)
    return removed


def claim_subnet(bed_id: str) -> tuple[IPv4Network, Path]:
    """A free /24, claimed with an exclusive file so two beds starting at once never share one."""
    REGISTRY.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        taken = [rec.get("subnet", "") for _, rec in _records()]
        subnet = net.pick_subnet(net.used_networks(), taken)
        if subnet is None:
            break
        claim = REGISTRY / f"subnet-{subnet.network_address}.claim"
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"id": bed_id, **owner()}))
        return subnet, claim
    raise NetError(f"no free /24 left in {net.SUPERNET} for a test bed")
