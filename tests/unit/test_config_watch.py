"""A config file broken under a running process: the last good content stays in force and the error is told once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from continuity.config_watch import LastGood, load_or_last_good
from continuity.errors import UsageError


def _load(path: Path) -> int:
    text = path.read_text()
    if not text.strip().isdigit():
        raise UsageError(f"{path}:1: not a number")
    return int(text)


def _write(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_a_broken_edit_keeps_the_last_good_value_and_is_told_once(tmp_path: Path) -> None:
    f, copy = tmp_path / "bp.yml", tmp_path / "last-good" / "bp.yml"
    now = [100.0]
    watch = LastGood(_load, clock=lambda: now[0], keep_copy=copy)
    _write(f, "1", 1)
    first = watch.get(f)
    assert (first.value, first.error, first.news) == (1, None, None) and copy.read_text() == "1"
    _write(f, "oops", 2)
    broken = watch.get(f)
    assert broken.value == 1 and broken.news == "invalid" and "not a number" in broken.error.error
    assert broken.error.since == 100.0 and copy.read_text() == "1"  # the copy is only ever a good file
    now[0] = 160.0
    assert watch.get(f).news is None  # same broken content: nothing new
    _write(f, "still oops", 3)
    again = watch.get(f)
    assert again.value == 1 and again.news is None and again.error.since == 100.0 and "still" not in str(again.value)
    _write(f, "7", 4)
    healed = watch.get(f)
    assert (healed.value, healed.error, healed.news) == (7, None, "recovered") and copy.read_text() == "7"


def test_nothing_good_yet_means_the_error_stands(tmp_path: Path) -> None:
    f = tmp_path / "bp.yml"
    _write(f, "oops", 1)
    with pytest.raises(UsageError):
        LastGood(_load).get(f)


def test_a_command_falls_back_on_the_last_good_copy_and_says_so(tmp_path: Path) -> None:
    f, copy = tmp_path / "bp.yml", tmp_path / "last-good" / "bp.yml"
    _write(f, "oops", 1)
    with pytest.raises(UsageError):  # no copy: the error, as before
        load_or_last_good(_load, f, copy)
    _write(f, "5", 2)
    assert load_or_last_good(_load, f, copy).value == 5 and copy.read_text() == "5"
    _write(f, "oops", 3)
    loaded = load_or_last_good(_load, f, copy)
    assert loaded.value == 5 and loaded.error is not None and "not a number" in loaded.error.error


def test_the_last_good_copy_is_the_owners_alone_whatever_the_umask(tmp_path: Path) -> None:
    """`continuity status` from a shell with umask 022 refreshes the copy: it must stay 0600 (state is private)."""
    import stat

    f, copy = tmp_path / "bp.yml", tmp_path / "last-good" / "bp.yml"
    _write(f, "7", 1)
    old = os.umask(0o022)
    try:
        assert load_or_last_good(_load, f, copy).value == 7
    finally:
        os.umask(old)
    assert copy.read_text() == "7" and stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
