"""Every command of the quick starts in README.md and docs/continuity/*.md, run as shown in a fresh clone.

A quick start is a section whose heading says "Quick start"; its commands are the lines of its ``sh``
blocks. They run one by one, in order, from the clone's root with bash (exports carry over, as in a
terminal), against a redis-server this test started, with ``continuity`` (and ``.venv/bin/continuity``,
which `make up` would have made) running the clone's code. A block a test cannot run says so in the page
right above it, ``<!-- doctest: skip: REASON -->``, and is listed here with its reason: nothing is
skipped silently, and a marker that no longer precedes a block fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "continuity").glob("*.md"))]
MARKER = re.compile(r"<!--\s*doctest:\s*skip:\s*(.+?)\s*-->")
HEADING = re.compile(r"^(#+)\s+(.*)$")


@dataclass
class Block:
    page: str
    line: int
    commands: list[str]
    skip: str | None


def quickstart_blocks(path: Path) -> list[Block]:
    """The ``sh`` blocks under "Quick start" headings of one page, each with its skip reason if marked."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    level: int | None = None  # heading level of the quick start we are in
    pending: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        h = HEADING.match(line)
        if h:
            if level is not None and len(h.group(1)) <= level:
                level = None
            if "quick start" in h.group(2).lower():
                level = len(h.group(1))
        m = MARKER.search(line)
        if m:
            pending = m.group(1)
        elif line.startswith("```"):
            fence = line[3:].strip()
            body = []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if fence == "sh" and level is not None:
                cmds = [b for b in body if b.strip() and not b.lstrip().startswith("#")]
                blocks.append(Block(path.name, i - len(body), cmds, pending))
            elif pending is not None:
                raise AssertionError(f"{path.name}:{i}: a doctest marker must stand right above a quick-start sh block")
            pending = None
        elif line.strip() and pending is not None:
            raise AssertionError(f"{path.name}:{i + 1}: a doctest marker must stand right above a quick-start sh block")
        i += 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in quickstart_blocks(page)]


def test_the_quick_starts_are_found_and_every_skip_says_why() -> None:
    blocks = all_blocks()
    assert {"README.md", "backup.md"} <= {b.page for b in blocks}
    runnable = [c for b in blocks if b.skip is None for c in b.commands]
    assert len(runnable) >= 12
    skipped = {c: b.skip for b in blocks if b.skip for c in b.commands}
    assert "make up" in " ".join(skipped) and all(len(reason) > 10 for reason in skipped.values())
    for page in PAGES:  # every marker in a page belongs to a quick-start block (none left behind)
        markers = len(MARKER.findall(page.read_text(encoding="utf-8")))
        assert markers == sum(1 for b in quickstart_blocks(page) if b.skip), page.name


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    dest = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, timeout=120)
    # the docs as they are in this tree (committed or not), on the clone's code
    for page in PAGES:
        target = dest / page.relative_to(ROOT)
        target.write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
    wrapper = (f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(dest))} exec {shlex.quote(sys.executable)} "
               f'-m continuity "$@"\n')
    for where in (tmp_path / "bin", dest / ".venv" / "bin"):  # `continuity` on PATH; what `make up` makes
        where.mkdir(parents=True)
        (where / "continuity").write_text(wrapper)
        (where / "continuity").chmod(0o755)
    return dest


def test_every_quick_start_command_runs_in_a_fresh_clone(clone: Path, redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTINUITY_", "PYTHON"))}
    env.update({"PATH": f"{tmp_path / 'bin'}:{env['PATH']}", "HOME": str(tmp_path), "COLUMNS": "100",
                "CONTINUITY_REDIS_URL": redis_url})
    state = tmp_path / "shell-state.sh"  # exports of one command seen by the next, as in one terminal
    state.write_text("")
    ran, skipped = [], []
    for block in all_blocks():
        if block.skip:
            skipped += [f"{block.page}:{block.line}: {c}  ({block.skip})" for c in block.commands]
            continue
        for cmd in block.commands:
            script = f"set -e\n. {shlex.quote(str(state))}\n{cmd}\nexport -p > {shlex.quote(str(state))}\n"
            r = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                               timeout=300)
            where = f"{block.page}:{block.line}: `{cmd}`"
            assert r.returncode == 0, f"{where} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
            assert "Traceback" not in r.stderr, f"{block.page}: `{cmd}`\n{r.stderr}"
            ran.append(cmd)
    print("ran:\n  " + "\n  ".join(ran) + "\nnot run (marked in the docs):\n  " + "\n  ".join(skipped))
    assert (clone / "scorecard.html").read_text().startswith("<!DOCTYPE html>")
    assert any(p.name == "README.txt" for p in (clone / ".continuity" / "quickstart" / "restored").rglob("*"))
    assert not (clone / ".continuity" / "repos").exists()  # the backup quick start kept off the fleet's repos
