"""compose.yaml is for users with Docker; here we prove it parses and names real entry points."""

from __future__ import annotations

import importlib
import os
import stat
import subprocess

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
        elif svc.get("entrypoint") == ["sh", "-c"]:
            assert name == "redis" and "exec redis-server " in argv[0], f"{name}: unexpected script"
            seen_programs.add("redis-server")
        else:
            assert argv[0] == "redis-server", f"{name}: unexpected program {argv[0]}"
    assert {"continuity", "celery", "redis-server"} <= seen_programs


def test_one_worker_per_blueprint_node_and_safe_redis() -> None:
    services = _compose()["services"]
    nodes = {svc["command"][svc["command"].index("--node") + 1]
             for svc in services.values() if "--node" in svc["command"]}
    assert nodes == set(load_blueprint(ROOT / "ops" / "blueprint.yml").nodes)
    script = services["redis"]["command"][0]
    assert "--appendonly yes" in script and "--maxmemory-policy noeviction" in script
    assert "--aclfile" in script and "--requirepass" not in script


def _acl_lines(tmp_path) -> list[str]:
    """Run the redis service's start script (compose's ``$$`` unescaped) with redis-server swapped for ``cat``."""
    svc = _compose()["services"]["redis"]
    script = svc["command"][0].replace("$$", "$").replace("/run/redis", str(tmp_path))
    script = script.replace("exec redis-server", f"cat {tmp_path}/users.acl; : ")
    env = {"PATH": os.environ["PATH"], **{k: f"pw-{k}" for k in svc["environment"]}}
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True)
    assert stat.S_IMODE(os.stat(tmp_path / "users.acl").st_mode) == 0o600
    return out.stdout.splitlines()


def test_redis_has_one_acl_user_per_role_and_none_may_reconfigure_it(tmp_path) -> None:
    lines = _acl_lines(tmp_path)
    assert lines[0] == "user default off"
    users = {line.split()[1]: line for line in lines[1:]}
    assert set(users) == {"worker", "beat", "flower"}
    for role, line in users.items():
        assert f">pw-REDIS_{role.upper()}_PASSWORD" in line
        assert all(rule in line.split() for rule in ("-config", "-module", "-debug", "-acl")), line
    services = _compose()["services"]
    for name, svc in services.items():
        url = (svc.get("environment") or {}).get("CONTINUITY_REDIS_URL")
        if url:
            role = "flower" if name == "flower" else "beat" if name == "beat" else "worker"
            assert url.startswith(f"redis://{role}:${{REDIS_{role.upper()}_PASSWORD"), (name, url)


def test_no_container_runs_as_root_and_each_node_mounts_only_its_own_keys() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        uid = str(svc.get("user", "0")).split(":")[0]
        assert uid not in ("0", "root"), f"{name} runs as root"
    for name, svc in services.items():
        key_volumes = [v.split(":")[0] for v in svc.get("volumes", []) if v.startswith("keys-")]
        node = svc["command"][svc["command"].index("--node") + 1] if "--node" in svc["command"] else None
        if name == "node-keys":
            continue  # the operator's one-shot step makes every node's key
        assert key_volumes == ([f"keys-{node}"] if node else []), (name, key_volumes)
        if node:
            assert f"keys-{node}:/data/keys/nodes/{node}" in svc["volumes"]
            assert "node-registry:/registry:ro" in svc["volumes"]
    flower = services["flower"]
    assert not any("basic-auth" in part or "unauthenticated" in part.lower() for part in flower["command"])
    assert "FLOWER_BASIC_AUTH" in flower["environment"] and "FLOWER_UNAUTHENTICATED_API" not in flower["environment"]
    assert "volumes" not in flower, "Flower gets neither the shared state nor any key"


def test_dockerfile_named_by_compose_exists() -> None:
    worker = _compose()["services"]["beat"]
    assert (ROOT / worker["build"]["dockerfile"]).is_file()
