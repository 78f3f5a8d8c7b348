"""What every command-line tool owes its users: a version, shell completion, and the same answer to a typo."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

import continuity
from tests.helpers import ROOT


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "continuity", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    r = _cli(flag)
    assert r.returncode == 0 and r.stdout == f"continuity {continuity.__version__}\n"


def test_the_version_has_one_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "continuity.__version__"}


# how each shell asks for completions (the protocol typer's scripts speak)
ASK = {
    "bash": lambda words: {"_CONTINUITY_COMPLETE": "complete_bash", "COMP_WORDS": words,
                           "COMP_CWORD": str(len(words.split(" ")) - 1)},
    "zsh": lambda words: {"_CONTINUITY_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": words},
    "fish": lambda words: {"_CONTINUITY_COMPLETE": "complete_fish", "_TYPER_COMPLETE_ARGS": words,
                           "_TYPER_COMPLETE_FISH_ACTION": "get-args"},
}


@pytest.mark.parametrize("shell", sorted(ASK))
def test_completion_script_for_each_shell(shell: str) -> None:
    r = _cli("--show-completion", shell, env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert r.returncode == 0, r.stderr
    assert "_CONTINUITY_COMPLETE" in r.stdout and f"complete_{shell}" in r.stdout


@pytest.mark.parametrize("shell", sorted(ASK))
def test_completion_completes_commands_and_subcommands(shell: str) -> None:
    r = _cli(env=ASK[shell]("continuity fail"))
    assert r.returncode == 0 and "failover" in r.stdout and "drill" not in r.stdout, r.stdout + r.stderr
    r = _cli(env=ASK[shell]("continuity failover sw"))
    assert r.returncode == 0 and "switchover" in r.stdout, r.stdout + r.stderr


def test_completing_a_command_name_imports_no_command() -> None:
    probe = ("import sys\nfrom continuity.cli import main\ntry:\n    main([])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('continuity.cli.')), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, **ASK["bash"]("continuity ")})
    assert "failover" in r.stdout.split() and "report" in r.stdout.split()
    assert r.stderr.strip().splitlines()[-1] == "['continuity.cli.lazy']"


def test_status_imports_only_what_it_shows() -> None:
    """`continuity status` is what on-call runs first: it must not pay for Celery, the backup engine, S3 or the
    drill and failover machinery (measured with `python -X importtime -m continuity status`: typer, redis-py,
    the blueprint's models and rich tables are what it needs; anything below is a regression)."""
    probe = ("import json, sys\nfrom continuity.cli import main\ntry:\n    main(['status'])\nexcept SystemExit:\n"
             "    pass\nprint('MODULES ' + json.dumps(sorted(sys.modules)), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, "CONTINUITY_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert "cannot read status from Redis" in r.stderr  # it got as far as reading
    mods = set(__import__("json").loads(r.stderr.split("MODULES ", 1)[1]))
    heavy = {"celery", "kombu", "workers", "boto3", "botocore", "zstandard", "pyfastcdc", "continuity.backup",
             "continuity.drills", "continuity.failover", "continuity.report", "continuity.pulse",
             "cryptography.hazmat"}
    assert {m for m in mods if m.split(".")[0] in heavy or m in heavy or m.startswith(tuple(h + "." for h in heavy))} \
        == set()
