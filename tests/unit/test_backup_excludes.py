"""Excludes with restic's semantics: patterns, exclude files, tag files, one file system, in real snapshots."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from continuity.backup import excludes
from continuity.backup.excludes import BadPattern, ExcludeOptions, build, expand_env, list_match, matches, parse
from continuity.backup.repository import Repository
from continuity.backup.restore import walk
from continuity.backup.snapshot import Source, take_snapshot
from tests.unit.test_backup_engine import make_repo

SIG = excludes.CACHEDIR_SIGNATURE


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("*.log", "/srv/app/today.log", True),            # a relative pattern: any component
    ("*.log", "/srv/app/today.log.gz", False),        # the whole component must match
    ("app", "/srv/app/today.log", True),              # a directory component excludes what is below it
    ("app", "/srv/apple/today.log", False),           # no partial components
    ("srv/app", "/data/srv/app", True),               # a run of consecutive components, anywhere
    ("srv/*/x", "/srv/app/today/x", False),           # `*` never spans a `/`
    ("/srv", "/srv/app/today.log", True),             # anchored: a prefix from the root
    ("/app", "/srv/app", False),
    ("/srv/app/", "/srv/app", True),                  # a trailing slash is ignored
    ("/srv//app/../app", "/srv/app", True),           # patterns are cleaned first
    ("srv/**/x", "/srv/x", True),                     # `**`: zero ...
    ("srv/**/x", "/srv/a/b/c/x/y", True),             # ... or many directories
    ("srv/**/x", "/srv/a/b/c/y", False),
    ("/srv/**", "/srv", True),
    ("te?t", "/a/test", True),
    ("te?t", "/a/tet", False),
    ("[a-c]x", "/bx", True),
    ("[^a-c]x", "/bx", False),
    ("[^a-c]x", "/dx", True),
    ("\\*x", "/*x", True),                             # an escaped star is a star
    ("\\*x", "/ax", False),
    ("Cache", "/home/u/cache", False),                # case matters (use iexclude)
])
def test_pattern_semantics(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


@pytest.mark.parametrize("pattern", ["[abc", "abc\\", "[]a]", "x[a-]", "!"])
def test_malformed_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(BadPattern):
        parse(pattern)


def test_negation_reincludes_what_an_earlier_pattern_excluded() -> None:
    pats = [parse(p) for p in ["/home/u/*", "!/home/u/Documents", "*.tmp"]]
    assert list_match(pats, "/home/u/Music")
    assert not list_match(pats, "/home/u/Documents")
    assert list_match(pats, "/home/u/Documents/x.tmp")  # a later pattern excludes again
    assert not list_match(pats, "/home/u/Documents/x.txt")


def test_environment_expansion_follows_go() -> None:
    env = {"HOME": "/home/u", "X": "1"}
    assert expand_env("$HOME/a/${X}b", env) == "/home/u/a/1b"
    assert expand_env("$UNSET/a", env) == "/a"       # unset: empty, as os.ExpandEnv
    assert expand_env("cost$$5", env) == "cost$5"    # $$: a literal dollar
    assert expand_env("x$", env) == "x$"             # a lone trailing $ stays
    assert expand_env("a${}b", env) == "ab"          # bad syntax is eaten


def test_exclude_file_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROJ", "/srv/proj")
    f = tmp_path / "ex.txt"
    f.write_text("# build output\n\n  *.o  \n$PROJ/tmp\nname with spaces\n")
    assert excludes.read_pattern_file(str(f)) == ["*.o", "/srv/proj/tmp", "name with spaces"]
    with pytest.raises(BadPattern, match="--exclude-file"):
        build(ExcludeOptions(exclude_file=(str(tmp_path / "missing.txt"),)))


def _names(repo: Repository, summary: dict) -> set[str]:
    snap = repo.find_snapshot(summary["id"])
    return {rel for rel, _ in walk(repo, snap["tree"])}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for rel, text in {"keep.txt": "k", "scratch.tmp": "t", "build/out.o": "o", "build/notes.txt": "n",
                      "docs/README.TMP": "r", "docs/guide.txt": "g", "deep/a/b/target/x.bin": "x",
                      "deep/a/src/main.c": "m"}.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return src


def _snap(tmp_path: Path, src: Path, **opts: object) -> tuple[Repository, set[str], dict]:
    repo = make_repo(tmp_path / f"repo-{len(list(tmp_path.glob('repo-*')))}")
    summary = take_snapshot(repo, [Source("directory", str(src))], excluder=build(ExcludeOptions(**opts)))
    return repo, _names(repo, summary), summary


def test_patterns_leave_out_files_and_whole_directories(tmp_path: Path, tree: Path) -> None:
    repo, names, summary = _snap(tmp_path, tree, exclude=("*.tmp", "build", "deep/**/target"))
    assert names == {"src", "src/keep.txt", "src/docs", "src/docs/README.TMP", "src/docs/guide.txt", "src/deep",
                     "src/deep/a", "src/deep/a/b", "src/deep/a/src", "src/deep/a/src/main.c"}
    assert repo.find_snapshot(summary["id"])["excludes"] == ["*.tmp", "build", "deep/**/target"]


def test_iexclude_and_exclude_file(tmp_path: Path, tree: Path) -> None:
    ex = tmp_path / "ex.txt"
    ex.write_text("# objects\n*.o\n")
    _, names, _ = _snap(tmp_path, tree, iexclude=("*.tmp",), exclude_file=(str(ex),))
    assert "src/docs/README.TMP" not in names and "src/scratch.tmp" not in names
    assert "src/build/out.o" not in names and "src/build/notes.txt" in names


def test_a_source_named_explicitly_is_never_excluded(tmp_path: Path, tree: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    summary = take_snapshot(repo, [Source("directory", str(tree / "scratch.tmp"))],
                            excluder=build(ExcludeOptions(exclude=("*.tmp",))))
    assert _names(repo, summary) == {"scratch.tmp"}


def test_negated_pattern_brings_back_a_directory(tmp_path: Path, tree: Path) -> None:
    _, names, _ = _snap(tmp_path, tree, exclude=(f"{tree}/*", f"!{tree}/docs"))
    assert names == {"src", "src/docs", "src/docs/README.TMP", "src/docs/guide.txt"}


def test_exclude_caches_keeps_only_a_valid_tag(tmp_path: Path, tree: Path) -> None:
    cache = tree / "build"
    (cache / "CACHEDIR.TAG").write_text(SIG + "\n# made by a compiler\n")
    (cache / "sub").mkdir()
    (cache / "sub" / "deeper.o").write_text("d")
    bogus = tree / "docs" / "CACHEDIR.TAG"
    bogus.write_text("Signature: not the right one")
    _, names, summary = _snap(tmp_path, tree, exclude_caches=True)
    assert {n for n in names if n.startswith("src/build")} == {"src/build", "src/build/CACHEDIR.TAG"}
    assert "src/docs/guide.txt" in names  # a wrong signature excludes nothing ...
    assert any(str(bogus) in w and "signature" in w for w in summary["warnings"])  # ... and says so
    _, plain, _ = _snap(tmp_path, tree)
    assert "src/build/sub/deeper.o" in plain


def test_exclude_if_present_with_and_without_header(tmp_path: Path, tree: Path) -> None:
    (tree / "docs" / ".nobackup").write_text("")
    (tree / "deep" / "a" / ".nobackup").write_text("please skip")
    _, names, _ = _snap(tmp_path, tree, exclude_if_present=(".nobackup",))
    assert {n for n in names if n.startswith(("src/docs", "src/deep/a"))} == {
        "src/docs", "src/docs/.nobackup", "src/deep/a", "src/deep/a/.nobackup"}
    _, names, _ = _snap(tmp_path, tree, exclude_if_present=(".nobackup:please",))
    assert "src/docs/guide.txt" in names and "src/deep/a/src" not in names


def _stat(dev: int, mode: int) -> os.stat_result:
    return SimpleNamespace(st_dev=dev, st_mode=mode)  # type: ignore[return-value]


def test_other_file_system_entries_are_left_out_and_mount_points_kept_empty() -> None:
    """The decision alone (tests/integration/test_backup_excludes_restic.py mounts a real tmpfs)."""
    flt = build(ExcludeOptions(one_file_system=True))
    assert flt is not None
    here, there = 64, 65
    assert flt.other_device(_stat(here, 0o100644), here) is None
    assert flt.other_device(_stat(there, 0o040755), here) == "mountpoint"
    assert flt.other_device(_stat(there, 0o100644), here) == "skip"
    off = build(ExcludeOptions(exclude=("x",)))
    assert off is not None and off.other_device(_stat(there, 0o100644), here) is None


def test_without_excludes_nothing_is_built() -> None:
    assert build(ExcludeOptions()) is None
