"""The Makefile's promises that are cheap to keep honest: a broken venv is rebuilt, chromium comes with `test`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(cwd: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", f"PY={getattr(sys, '_base_executable', sys.executable)}",
                           *targets], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_an_interrupted_first_run_leaves_a_venv_that_is_rebuilt(tmp_path: Path) -> None:
    """`make up` interrupted after `python -m venv` but before pip was in: every later run used to fail with
    "No module named pip"; now the venv is recognised as broken and made again."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip",
                    str(tmp_path / ".venv")], check=True, timeout=120)
    broken = subprocess.run([tmp_path / ".venv" / "bin" / "python", "-m", "pip", "--version"], capture_output=True)
    assert broken.returncode != 0
    r = _make(tmp_path, "venv")
    assert r.returncode == 0, r.stderr
    assert "rebuilding" in r.stdout
    fixed = subprocess.run([tmp_path / ".venv" / "bin" / "python", "-m", "pip", "--version"], capture_output=True)
    assert fixed.returncode == 0
    again = _make(tmp_path, "venv")  # a good venv is left alone
    assert again.returncode == 0 and "rebuilding" not in again.stdout


def test_make_test_brings_chromium_first() -> None:
    r = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    chromium = next(i for i, line in enumerate(lines) if "apt-get install" in line and "chromium" in line)
    pytest_line = next(i for i, line in enumerate(lines) if "pytest" in line)
    assert chromium < pytest_line


@pytest.mark.parametrize("package", ["postgresql", "restic"])
def test_make_test_brings_the_backup_recipes_tools_first(package: str) -> None:
    """The PostgreSQL recipe's test needs a real server, the restic comparison restic: installed before pytest."""
    r = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    install = next(i for i, line in enumerate(lines) if "apt-get install" in line and f" {package} " in line)
    assert install < next(i for i, line in enumerate(lines) if "pytest" in line)


def test_make_test_brings_promtool_first() -> None:
    """The alert rules' promtool checks and unit tests (and the dashboard's query check) skip without it."""
    r = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    install = next(i for i, line in enumerate(lines) if "apt-get install" in line and " prometheus " in line)
    assert install < next(i for i, line in enumerate(lines) if "pytest" in line)
