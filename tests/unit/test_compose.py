"""compose.yaml is for users with Docker; here we prove it parses and names real entry points."""

from __future__ import annotations

import importlib

import click
import typer
import yaml

from continuity.blueprint import load_blueprint
from continuity.cli import app
from tests.helpers import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _resolve_continuity(argv: list[str]) -> click.Command:
    cmd: click.Command = typer.main.get_command(app)
    ctx = click.Context(cmd)
    for word in argv[1:]:
        if word.startswith("-") or not isinstance(cmd, click.Group):
            break
        sub = cmd.get_command(ctx, word)
        assert sub is not None, f"`{' '.join(argv)}`: no such command {word!r}"
        cmd = sub
    return cmd


def test_every_command_is_a_real_entry_point() -> None:
    services = _compose()["services"]
    seen_programs = set()
    for name, svc in services.items():
        argv = svc["command"]
        assert isinstance(argv, list), f"{name}: commands are argv lists"
        seen_programs.add(argv[0])
        if argv[0] == "continuity":
            _resolve_continuity(argv)
        elif argv[0] == "celery":
            module = argv[argv.index("-A") + 1]
            assert hasattr(importlib.import_module(module), "app")
            assert argv[argv.index("-A") + 2] == "flower"
            importlib.import_module("flower")
        else:
            assert argv[0] == "redis-server", f"{name}: unexpected program {argv[0]}"
    assert {"continuity", "celery", "redis-server"} <= seen_programs


def test_one_worker_per_blueprint_node_and_safe_redis() -> None:
    services = _compose()["services"]
    nodes = {svc["command"][svc["command"].index("--node") + 1]
             for svc in services.values() if "--node" in svc["command"]}
    assert nodes == set(load_blueprint(ROOT / "ops" / "blueprint.yml").nodes)
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--requirepass" in redis_cmd
    assert any("--basic-auth" in part for part in services["flower"]["command"])


def test_dockerfile_named_by_compose_exists() -> None:
    worker = _compose()["services"]["beat"]
    assert (ROOT / worker["build"]["dockerfile"]).is_file()
