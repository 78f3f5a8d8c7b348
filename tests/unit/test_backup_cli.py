"""CLI contract: restic exit codes, --json output, config errors with file:line."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from tests.unit.test_backup_damage import run_cli

Cap = pytest.CaptureFixture[str]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONTINUITY_PASSWORD", "right")
    monkeypatch.delenv("CONTINUITY_REPOSITORY", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    return tmp_path


def test_init_snapshot_list_json(env: Path, capsys: Cap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_REPOSITORY", str(env / "repo"))
    assert run_cli(["backup", "init"], capsys)[0] == 0
    rc, out, _ = run_cli(["backup", "snapshot", str(env / "src"), "--json"], capsys)
    summary = json.loads(out)
    assert rc == 0 and summary["files_new"] == 1 and len(summary["id"]) == 64
    rc, out, _ = run_cli(["backup", "list", "--json"], capsys)
    assert [s["id"] for s in json.loads(out)] == [summary["id"]]
    rc, out, _ = run_cli(["backup", "verify", "--json", "--read-data-subset", "1/2"], capsys)
    assert rc == 0 and json.loads(out)["ok"]
    rc, out, _ = run_cli(["backup", "verify", "--drill", "latest", "--json"], capsys)
    assert rc == 0 and json.loads(out)["drill"]["ok"]


def test_wrong_password_is_12(env: Path, capsys: Cap, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli(["backup", "init", "--repo", str(env / "repo")], capsys)[0] == 0
    monkeypatch.setenv("CONTINUITY_PASSWORD", "wrong")
    rc, _, err = run_cli(["backup", "list", "--repo", str(env / "repo")], capsys)
    assert rc == 12 and "wrong password" in err
    pw = env / "pw"
    pw.write_text("right\n")
    assert run_cli(["backup", "list", "--repo", str(env / "repo"), "--password-file", str(pw)], capsys)[0] == 0


def test_missing_repository_is_10(env: Path, capsys: Cap) -> None:
    for cmd in (["list"], ["snapshot", str(env / "src")], ["verify"], ["unlock"]):
        rc, _, err = run_cli(["backup", *cmd, "--repo", str(env / "nope")], capsys)
        assert rc == 10, (cmd, err)
        assert "no repository" in err


def test_a_repository_path_that_is_a_file_or_unreadable_is_one_line(env: Path, capsys: Cap) -> None:
    # --repo naming a file (a typo for its directory): no such repository, not a traceback
    rc, _, err = run_cli(["backup", "list", "--repo", str(env / "src" / "a.txt")], capsys)
    assert rc == 10 and "no repository at" in err and "Traceback" not in err
    (env / "odd" / "config").mkdir(parents=True)  # a config that cannot be read as a file
    rc, _, err = run_cli(["backup", "list", "--repo", str(env / "odd")], capsys)
    assert rc == 1 and err.strip().count("\n") == 0 and "cannot read the repository config" in err, err


def test_locked_is_11_and_message_says_how_to_unlock(env: Path, capsys: Cap) -> None:
    repo = env / "repo"
    assert run_cli(["backup", "init", "--repo", str(repo)], capsys)[0] == 0
    # an exclusive lock held by a live process on this host (this one)
    (repo / "locks").mkdir(exist_ok=True)
    (repo / "locks" / "held").write_text(json.dumps({
        "hostname": socket.gethostname(), "pid": os.getpid(), "time": 4e9, "exclusive": True,
        "operation": "prune"}))
    rc, _, err = run_cli(["backup", "snapshot", str(env / "src"), "--repo", str(repo)], capsys)
    assert rc == 11 and "continuity backup unlock" in err
    assert run_cli(["backup", "prune", "--repo", str(repo)], capsys)[0] == 11
    # plain unlock keeps a live lock, --remove-all breaks it
    run_cli(["backup", "unlock", "--repo", str(repo)], capsys)
    assert run_cli(["backup", "snapshot", str(env / "src"), "--repo", str(repo)], capsys)[0] == 11
    run_cli(["backup", "unlock", "--repo", str(repo), "--remove-all"], capsys)
    assert run_cli(["backup", "snapshot", str(env / "src"), "--repo", str(repo)], capsys)[0] == 0


def test_partial_source_is_3(env: Path, capsys: Cap) -> None:
    assert run_cli(["backup", "init", "--repo", str(env / "repo")], capsys)[0] == 0
    rc, _, err = run_cli(["backup", "snapshot", str(env / "src"), str(env / "gone"), "--repo",
                          str(env / "repo")], capsys)
    assert rc == 3 and f"{env / 'gone'} does not exist, skipping" in err
    rc, out, _ = run_cli(["backup", "list", "--repo", str(env / "repo"), "--json"], capsys)
    listed = json.loads(out)
    assert len(listed) == 1 and listed[0]["paths"] == [str(env / "src")]  # restic: the rest is saved


def test_usage_errors_are_2(env: Path, capsys: Cap, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli(["backup", "list"], capsys)[0] == 2  # no repo
    monkeypatch.delenv("CONTINUITY_PASSWORD")
    rc, _, err = run_cli(["backup", "init", "--repo", str(env / "r")], capsys)
    assert rc == 2 and "CONTINUITY_PASSWORD" in err
    monkeypatch.setenv("CONTINUITY_PASSWORD", "x")
    assert run_cli(["backup", "init", "--repo", str(env / "r")], capsys)[0] == 0
    rc, _, err = run_cli(["backup", "forget", "--repo", str(env / "r")], capsys)
    assert rc == 2 and "no policy" in err


BAD_CONFIGS = [
    ("version: 1\nnodes: {a: {role: core}}\nsets:\n  s:\n    node: b\n    sources: [{kind: directory, path: x}]\n"
     "    repository: r\n    key: {password_env: P}\n", 5, "unknown node"),
    ("version: 1\nnodes: {a: {role: core}, b: {}}\nsets:\n  s:\n    node: a\n    sources:\n"
     "      - {kind: tape, path: x}\n    repository: r\n    key: {password_env: P}\n", 7, "sets.s.sources[0].kind"),
    ("version: 1\nnodes: {a: {}, b: {}}\nsets:\n  s:\n    node: a\n    sources: [{kind: ledger, path: x}]\n"
     "    repository: r\n    schedule: often\n    key: {password_env: P}\n", 8, "schedule"),
    ("version: 1\nnodes: {a: {}, b: {}}\nsets:\n  s:\n    node: a\n    sources: [{kind: ledger, path: x}]\n"
     "    repository: r\n    key: {password: hunter2}\n", 8, "sets.s.key"),
    ("version: 1\nnodes: {a: {}, b: {}}\nsets:\n  s:\n    node: a\n    sources: [{kind: ledger, path: x}]\n"
     "    repository: r\n    key: {password_env: P}\n    verify: {node: a}\n", 9, "different node"),
    ("version: 1\nnodes: {a: {}}\nsets:\n  s:\n    node: a\n    sources: [{kind: ledger, path: x}]\n"
     "    repository: r\n    key: {password_env: P}\n    retention: {keep_daily: -1}\n", 9, "keep_daily"),
    ("version: 1\nnodes: [a\n", 3, "YAML syntax"),
]


@pytest.mark.parametrize(("text", "line", "needle"), BAD_CONFIGS)
def test_malformed_config_is_2_with_file_and_line(env: Path, capsys: Cap, text: str, line: int,
                                                  needle: str) -> None:
    cfg = env / "continuity.yml"
    cfg.write_text(text)
    rc, _, err = run_cli(["backup", "snapshot", "--config", str(cfg), "--set", "s"], capsys)
    assert rc == 2
    assert f"{cfg}:{line}:" in err and needle in err, err


def test_shipped_config_is_valid_against_the_shipped_blueprint() -> None:
    from continuity.backup.config import load_fleet_backup_config
    from continuity.blueprint import load_blueprint

    root = Path(__file__).resolve().parents[2]
    cfg = load_fleet_backup_config(root / "ops" / "backup" / "continuity.yml", root=root)
    nodes = load_blueprint(root / "ops" / "blueprint.yml").nodes
    assert cfg.model.nodes is None and cfg.notes == []  # no deprecated duplicate of the blueprint's nodes
    assert {s.node for s in cfg.sets.values()} <= set(nodes)
    for s in cfg.sets.values():
        assert s.verify is None or (s.verify.node in nodes and s.verify.node != s.node)


SET = ("sets:\n  s:\n    node: {node}\n    sources: [{{kind: directory, path: src}}]\n"
       "    repository: {repo}\n    key: {{password_env: CONTINUITY_PASSWORD}}\n")


@pytest.fixture
def project(env: Path) -> Path:
    """A project (pyproject.toml marks its root) with the shipped blueprint: nodes core-a, core-b, sat-1."""
    root = env / "proj"
    (root / "ops" / "backup").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    shipped = Path(__file__).resolve().parents[2] / "ops" / "blueprint.yml"
    (root / "ops" / "blueprint.yml").write_text(shipped.read_text())
    (root / "src").mkdir()
    (root / "src" / "f.txt").write_text("data")
    return root


def _write(project: Path, text: str) -> Path:
    cfg = project / "ops" / "backup" / "continuity.yml"
    cfg.write_text(text)
    return cfg


BLUEPRINT_BAD = [
    # a set on a node the blueprint does not declare
    ("version: 1\n" + SET.format(node="core-z", repo="r"), 4, "sets.s.node: unknown node 'core-z'"),
    # a restore drill on a node the blueprint does not declare
    ("version: 1\n" + SET.format(node="core-a", repo="r") + "    verify: {node: core-q}\n", 8,
     "sets.s.verify.node: unknown node 'core-q'"),
    # the deprecated nodes: section lists a node the blueprint does not have
    ("version: 1\nnodes:\n  core-a: {}\n  old-1: {}\n" + SET.format(node="core-a", repo="r"), 4,
     "nodes.old-1: node 'old-1' is not in"),
    # ... or gives a node another kind than the blueprint
    ("version: 1\nnodes:\n  core-a: {}\n  sat-1:\n    role: core\n" + SET.format(node="core-a", repo="r"), 5,
     "nodes.sat-1.role: role 'core' disagrees"),
]


@pytest.mark.parametrize(("text", "line", "needle"), BLUEPRINT_BAD)
def test_node_references_are_checked_against_the_blueprint(project: Path, capsys: Cap, text: str, line: int,
                                                            needle: str) -> None:
    cfg = _write(project, text)
    rc, out, err = run_cli(["backup", "snapshot", "--config", str(cfg), "--set", "s"], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and f"{cfg}:{line}: {needle}" in err, err
    assert "blueprint.yml" in err


def test_nodes_section_is_optional_and_deprecated(project: Path, capsys: Cap) -> None:
    repo = project / "repo"
    cfg = _write(project, "version: 1\n" + SET.format(node="core-b", repo=repo))
    rc, out, err = run_cli(["backup", "snapshot", "--config", str(cfg), "--set", "s", "--json"], capsys)
    assert rc == 0 and json.loads(out)["files_new"] == 1 and "deprecated" not in err
    # a nodes: section that agrees with the blueprint still loads, with a note naming where it is
    cfg = _write(project, "version: 1\nnodes: {core-b: {role: core}, sat-1: {role: satellite}}\n"
                 + SET.format(node="core-b", repo=repo))
    rc, out, err = run_cli(["backup", "snapshot", "--config", str(cfg), "--set", "s", "--json"], capsys)
    assert rc == 0 and f"note: {cfg}:2: nodes: is deprecated" in err


def test_without_a_blueprint_node_names_are_not_checked(env: Path, capsys: Cap) -> None:
    """Standalone use: a config outside any project (no pyproject.toml/.git above it) needs no blueprint."""
    cfg = env / "standalone.yml"
    cfg.write_text("version: 1\n" + SET.format(node="laptop", repo=env / "repo").replace("path: src",
                                                                                        f"path: {env / 'src'}"))
    rc, out, _ = run_cli(["backup", "snapshot", "--config", str(cfg), "--set", "s", "--json"], capsys)
    assert rc == 0 and json.loads(out)["files_new"] == 1


def test_explicit_blueprint_must_exist(env: Path, capsys: Cap, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = env / "standalone.yml"
    cfg.write_text("version: 1\n" + SET.format(node="laptop", repo=env / "repo"))
    monkeypatch.setenv("CONTINUITY_BLUEPRINT", str(env / "missing.yml"))
    rc, _, err = run_cli(["backup", "snapshot", "--config", str(cfg), "--set", "s"], capsys)
    assert rc == 2 and f"{env / 'missing.yml'}: file not found" in err


def test_loader_takes_node_ids_or_a_blueprint_mapping(tmp_path: Path) -> None:
    from continuity.backup.config import load_backup_config
    from continuity.errors import ConfigError

    cfg = tmp_path / "c.yml"
    cfg.write_text("version: 1\n" + SET.format(node="n1", repo="r") + "    verify: {node: n2}\n")
    assert load_backup_config(cfg, blueprint_nodes=["n1", "n2"]).sets["s"].node == "n1"
    assert load_backup_config(cfg, blueprint_nodes={"n1": "core", "n2": "edge"}).sets["s"].verify is not None
    with pytest.raises(ConfigError) as exc:
        load_backup_config(cfg, blueprint_nodes=["n1"], blueprint_file="bp.yml")
    assert (exc.value.line, exc.value.key_path) == (8, "sets.s.verify.node") and "bp.yml: n1" in str(exc.value)


def test_key_commands(env: Path, capsys: Cap, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = str(env / "repo")
    run_cli(["backup", "init", "--repo", repo], capsys)
    monkeypatch.setenv("CONTINUITY_NEW_PASSWORD", "second")
    assert run_cli(["backup", "key", "add", "--repo", repo], capsys)[0] == 0
    rc, out, _ = run_cli(["backup", "key", "list", "--repo", repo, "--json"], capsys)
    keys = json.loads(out)["keys"]
    assert len(keys) == 2
    old_dk = json.loads(out)["data_key"]
    assert run_cli(["backup", "key", "rotate", "--repo", repo], capsys)[0] == 0
    rc, out, _ = run_cli(["backup", "key", "list", "--repo", repo, "--json"], capsys)
    assert json.loads(out)["data_key"] != old_dk and json.loads(out)["data_keys"] == 2
    other = next(k["id"] for k in keys if not k["current"])
    assert run_cli(["backup", "key", "remove", other[:8], "--repo", repo], capsys)[0] == 0
    monkeypatch.setenv("CONTINUITY_PASSWORD", "second")
    assert run_cli(["backup", "list", "--repo", repo], capsys)[0] == 12
