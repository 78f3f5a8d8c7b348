"""The disk guard: a node's data root is opened by that node and by the bed, by nobody else.

Why a guard and not just separate directories: code that reaches into another
node's directory usually treats "cannot read it" as "nothing there" (the
failover prepare step does), so hiding the other roots would make such code
quietly take another path, and no test would fail. The guard instead sits on
every open of a file or directory on the bed's roots filesystem (Linux
fanotify permission events, ``FAN_OPEN_PERM`` on one tmpfs holding all node
roots), looks up which network namespace the opening process lives in, and:

- lets it through when the process belongs to the node owning that root, or
  to the bed itself (the root namespace: the test harness, beat, the CLI);
- otherwise refuses the open (``EPERM``) and first appends a
  :class:`Violation` (reader node, owner node, path, process) to the
  violations file, which the bed's owner checks, so the test fails however
  the code under test handled the error.

Only opens are seen: a ``stat`` or ``exists()`` of another node's path is not
(fanotify has no event for it), but nothing can be read, listed or written
without an open. The guard runs as its own process (``python -m
continuity.netbed.guard``) so that a test process opening a root is never
waiting on its own thread; if the guard dies, the kernel lets pending and
later opens through, so the bed checks that the guard is alive when it reads
the verdicts.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import struct
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from continuity.netbed.net import NETNS_DIR, ns_id

# <linux/fanotify.h>
FAN_CLOEXEC = 0x01
FAN_CLASS_CONTENT = 0x04
FAN_OPEN_PERM = 0x10000
FAN_ONDIR = 0x40000000
FAN_MARK_ADD = 0x01
FAN_MARK_FILESYSTEM = 0x100
FAN_ALLOW = 0x01
FAN_DENY = 0x02
METADATA = struct.Struct("IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
RESPONSE = struct.Struct("iI")  # fd, response
METADATA_VERSION = 3
AT_FDCWD = -100

BED = "(bed)"  # the root namespace: harness, beat, CLI
ALL_ROOTS = "(all roots)"  # the directory holding every node's root: listing it is discovering other nodes
LOST = "(lost disk)"  # a lost node's root on its way to deletion


@dataclass(frozen=True)
class Violation:
    """A process of ``reader`` tried to open ``path``, which belongs to ``owner`` (refused)."""

    reader: str
    owner: str
    path: str
    pid: int
    command: str
    ts: float

    def line(self) -> str:
        return f"{self.reader} opened {self.owner}'s {self.path} (pid {self.pid}: {self.command})"

    @staticmethod
    def from_json(text: str) -> Violation | None:
        try:
            doc = json.loads(text)
            return Violation(str(doc["reader"]), str(doc["owner"]), str(doc["path"]), int(doc["pid"]),
                             str(doc["command"]), float(doc["ts"]))
        except (ValueError, KeyError, TypeError):
            return None


def parse_violations(text: str) -> list[Violation]:
    """The violations in (part of) a violations file; a torn or foreign line is skipped."""
    return [v for v in map(Violation.from_json, text.splitlines()) if v is not None]


# --- the decision: pure -----------------------------------------------------------------------------------------
def owner_of(path: str, roots: str, dirs: Mapping[str, str]) -> str:
    """Who owns ``path`` on the roots filesystem: the node whose root directory it is in, else a marker."""
    rel = path.removesuffix(" (deleted)")
    if rel == roots:
        return ALL_ROOTS
    top = rel[len(roots) + 1:].split("/", 1)[0] if rel.startswith(roots + "/") else ""
    if top in dirs:
        return dirs[top]
    return LOST if top.startswith(".lost") else ALL_ROOTS


def reader_of(ns: tuple[int, int] | None, nodes: Mapping[tuple[int, int], str], bed: tuple[int, int] | None) -> str:
    """Which node (or the bed) a process belongs to, from its network namespace id."""
    if ns is not None and ns == bed:
        return BED
    if ns in nodes:
        return nodes[ns]  # type: ignore[index]
    return "(unknown namespace)" if ns is not None else "(unknown process)"


def allowed(reader: str, owner: str) -> bool:
    """The rule: the bed may open anything, a node only its own root."""
    return reader == BED or reader == owner


# --- the kernel side --------------------------------------------------------------------------------------------
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
    return libc


def open_group(roots: Path) -> int:
    """A fanotify group receiving a permission event for every open on the filesystem of ``roots``."""
    libc = _libc()
    fd = libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, os.O_RDONLY | getattr(os, "O_LARGEFILE", 0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_init: {os.strerror(err)} (kernel without fanotify permission events?)")
    if libc.fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_OPEN_PERM | FAN_ONDIR, AT_FDCWD,
                          os.fsencode(str(roots))) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"fanotify_mark {roots}: {os.strerror(err)}")
    return fd


def supported() -> str | None:
    """Why permission events cannot be had here (None when they can): probed with a group and no mark."""
    fd = _libc().fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, os.O_RDONLY)
    if fd < 0:
        return f"fanotify permission events unavailable: {os.strerror(ctypes.get_errno())}"
    os.close(fd)
    return None


def events(data: bytes) -> Iterator[tuple[int, int]]:
    """(fd, pid) of each event in one read."""
    off = 0
    while off + METADATA.size <= len(data):
        length, vers, _, _, _, fd, pid = METADATA.unpack_from(data, off)
        if vers != METADATA_VERSION or length < METADATA.size:
            raise RuntimeError(f"fanotify metadata version {vers}, expected {METADATA_VERSION}")
        yield fd, pid
        off += length


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()[:300]
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"


def serve(group: int, roots: str, dirs: Mapping[str, str], nodes: Mapping[tuple[int, int], str],
          bed: tuple[int, int] | None, log: Path) -> None:
    """Answer every permission event, forever; a refusal is logged (and flushed) before it is answered."""
    with open(log, "a", encoding="utf-8") as out:
        while True:
            for fd, pid in events(os.read(group, 64 * 1024)):
                if fd < 0:
                    continue  # queue overflow notice: permission events are never dropped, nothing to answer
                try:
                    path = os.readlink(f"/proc/self/fd/{fd}")
                    owner = owner_of(path, roots, dirs)
                    reader = reader_of(ns_id(f"/proc/{pid}/ns/net"), nodes, bed)
                    ok = allowed(reader, owner)
                    if not ok:
                        v = Violation(reader, owner, path, pid, _command(pid), time.time())
                        out.write(json.dumps(asdict(v), sort_keys=True) + "\n")
                        out.flush()
                    os.write(group, RESPONSE.pack(fd, FAN_ALLOW if ok else FAN_DENY))
                finally:
                    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m continuity.netbed.guard",
                                     description="Refuse and log opens of a node's root by anything but that node.")
    parser.add_argument("--roots", required=True, help="The tmpfs holding every node's root directory.")
    parser.add_argument("--log", required=True, help="Violations file (JSON lines).")
    parser.add_argument("--node", action="append", default=[], metavar="NODE=DIR=NETNS",
                        help="A node, its root directory's name under --roots and its network namespace.")
    args = parser.parse_args(argv)
    roots = os.path.realpath(args.roots)
    dirs: dict[str, str] = {}
    nodes: dict[tuple[int, int], str] = {}
    for spec in args.node:
        node, directory, netns = spec.split("=", 2)
        dirs[directory] = node
        ident = ns_id(NETNS_DIR / netns)
        if ident is None:
            print(f"guard: no network namespace {netns!r}", file=sys.stderr)
            return 2
        nodes[ident] = node
    group = open_group(Path(roots))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)  # the bed waits for this line: from here on every open is judged
    serve(group, roots, dirs, nodes, ns_id("/proc/self/ns/net"), Path(args.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
