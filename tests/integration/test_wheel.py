"""The package as users get it: a wheel built with `pip wheel`, installed into a fresh venv, run outside the checkout.

The acceptance of the packaging work: `continuity --version`, `drill postmortem` (its template is package
data), `report --html` and `blueprint render` work from a directory that holds only a fleet's ops/ files,
with `continuity` imported from the venv and not from this source tree. The fresh venv gets no pip and no
download: the wheel is installed with this interpreter's pip (``--python``), its dependencies are seen
through a ``.pth`` pointing at this environment's site-packages (a ``.pth`` line adds a directory, it does
not run that directory's own ``.pth`` files, so this checkout's editable install stays out).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from continuity.blueprint_render import BEGIN_MARKER, END_MARKER
from tests.helpers import ROOT
from tests.report_seed import seed

pytestmark = pytest.mark.slow
SOURCES = ("pyproject.toml", "README.md", "beat_schedule.py", "continuity", "workers")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"  # a copy: building writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(p, src / name)
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist),
                    str(src)], check=True, timeout=600)
    wheel = next(dist.glob("continuity-*.whl"))
    env_dir = base / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(env_dir)],
                   check=True, timeout=120)
    py = env_dir / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=300)
    return env_dir


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    """A fleet's own directory: its ops/ files and an architecture page, nothing of this checkout's code."""
    work = tmp_path / "myfleet"
    shutil.copytree(ROOT / "ops", work / "ops")
    (work / "docs" / "continuity").mkdir(parents=True)
    (work / "docs" / "continuity" / "architecture.md").write_text(f"# Our fleet\n\n{BEGIN_MARKER}\n{END_MARKER}\n")
    return work


def _run(venv: Path, cwd: Path, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTINUITY_", "PYTHON"))}
    env.update(extra or {})
    return subprocess.run([str(venv / "bin" / "continuity"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_wheel_holds_the_code_and_its_runtime_data(venv: Path) -> None:
    py = venv / "bin" / "python"
    out = subprocess.run([py, "-c", "import continuity, workers, beat_schedule, continuity.report as r; "
                                    "print(continuity.__file__); print(r.TEMPLATE.is_file())"],
                         capture_output=True, text=True, cwd="/", check=True).stdout.split()
    assert out[0].startswith(str(venv)) and out[1] == "True"


def test_commands_work_outside_the_checkout(venv: Path, fleet_dir: Path, rds, redis_url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    state = fleet_dir / ".continuity"
    monkeypatch.setenv("CONTINUITY_STATE", str(state))  # where the seeded record's pulse events go
    ids = seed(rds, time.time())
    env = {"CONTINUITY_REDIS_URL": redis_url}

    r = _run(venv, fleet_dir, "--version", extra=env)
    assert r.returncode == 0 and re.fullmatch(r"continuity \d+\.\d+\.\d+\n", r.stdout)

    r = _run(venv, fleet_dir, "blueprint", "render", extra=env)
    assert r.returncode == 0, r.stderr
    assert "Fleet **echo**" in (fleet_dir / "docs" / "continuity" / "architecture.md").read_text()

    r = _run(venv, fleet_dir, "report", "--html", "scorecard.html", extra=env)
    assert r.returncode == 0, r.stderr
    page = (fleet_dir / "scorecard.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page

    for rid in (ids["failovers"][0], ids["drills"][0]):
        r = _run(venv, fleet_dir, "drill", "postmortem", rid, extra=env)
        assert r.returncode == 0, r.stderr
        draft = Path(r.stdout.strip())
        assert draft.parent == state / "postmortems"
        text = draft.read_text()
        assert text.startswith("# Postmortem (draft)") and "{{" not in text


def test_dockerfile_builds_from_the_wheel_and_runs_as_a_user() -> None:
    lines = [ln.strip() for ln in (ROOT / "ops" / "docker" / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    text = "\n".join(lines)
    assert "pip wheel" in text and re.search(r"pip install [^\n]*\.whl", text)
    assert not re.search(r"pip install [^\n]*\s\.(\s|$)", text), "the image must install the wheel, not the tree"
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    last_from = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
    assert any(ln.startswith("USER ") for ln in lines[last_from:])
    assert any(re.match(r"COPY docs\b", ln) for ln in lines[last_from:])  # `blueprint render` has its page
