"""The suite's end-of-session check finds a process a test left behind, fails the run and kills it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.leakcheck import leftovers, session_processes

pytest_plugins = ["pytester"]


def test_a_process_started_in_the_tmp_dir_is_found_until_it_exits(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "600"], cwd=tmp_path)
    try:
        assert proc.pid in session_processes(tmp_path, set())
    finally:
        proc.kill()
        proc.wait()
    assert leftovers(tmp_path, grace=0) == {}


LEAKY = """
import subprocess, sys

def test_leaks(tmp_path):
    # detached, like a sample service its start hook forked: nobody will stop it
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], cwd=tmp_path, start_new_session=True)
"""


@pytest.mark.slow
def test_a_session_that_leaves_a_process_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the inner session loads the check as a plugin from tests/
    pytester.makepyfile(test_leaky=LEAKY)
    res = pytester.runpytest_subprocess("-p", "tests.leakcheck", "-p", "no:cacheprovider", "--leak-grace=1",
                                        f"--rootdir={pytester.path}")
    assert res.ret == pytest.ExitCode.TESTS_FAILED, res.stdout.str()
    res.stdout.fnmatch_lines(["*1 process(es) outlived the test session (killed now):*", "*time.sleep(600)*"])
    assert leftovers(pytester.path, grace=5) == {}, "the check killed what it found"
