"""`continuity.settings` is the only reader of CONTINUITY_* variables, and configuration.md is its table.

What is held here, and why each can fail:
- the generated section of docs/continuity/configuration.md equals what the table renders (drift fails CI);
- no module outside settings.py reads a CONTINUITY_* variable itself or spells a variable's name as a string;
- every table entry is used somewhere (no dead documentation) and every name mentioned anywhere is in the table;
- nothing reads the environment at import time (a subprocess spies on os.environ while importing every module);
- a value that does not parse is a one-line usage error (exit 2) naming the variable, never a traceback.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from continuity import paths, settings
from continuity.errors import ContinuityError, ExitCode
from tests.helpers import ROOT

SCANNED = [ROOT / "continuity", ROOT / "workers", ROOT / "beat_schedule.py"]
# Files allowed to read CONTINUITY_* variables themselves, each with its reason.
ALLOWED = {
    "continuity/settings.py": "the table itself",
}
# Modules allowed to read the environment while being imported.
IMPORT_TIME_READERS = {
    "workers.app": "`celery -A workers.app` and every task module need the Celery app object at import",
}
VAR_NAME = re.compile(r"CONTINUITY_[A-Z0-9_]*\Z")


def _sources() -> list[Path]:
    out: list[Path] = []
    for base in SCANNED:
        out += sorted(base.rglob("*.py")) if base.is_dir() else [base]
    return out


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- (a) the documentation is generated from the table -------------------------------------------------------------
def test_configuration_doc_is_the_rendered_table() -> None:
    current = settings.DOC.read_text(encoding="utf-8")
    expected = settings.splice(current, settings.render_markdown(), file=str(settings.DOC))
    if expected != current:
        pytest.fail(f"{_rel(settings.DOC)} is out of date with continuity/settings.py; "
                    f"regenerate it with `{settings.REGENERATE}`")


def test_every_entry_appears_in_the_doc() -> None:
    doc = settings.DOC.read_text(encoding="utf-8")
    missing = [e.name for e in settings.table().values() if f"`{e.name}`" not in doc]
    assert not missing, f"not documented: {missing}"


def test_generator_checks_and_rewrites_only_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "c.md"
    doc.write_text(f"# Hand-written\n\n{settings.BEGIN_MARKER}\nstale\n{settings.END_MARKER}\n\nmore prose\n")
    assert settings.main(["--check", str(doc)]) == 1
    assert "stale" in doc.read_text()
    assert settings.main([str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Hand-written\n\n") and text.endswith("\nmore prose\n")
    assert settings.render_markdown() in text and "stale" not in text
    assert settings.main(["--check", str(doc)]) == 0


def test_generator_refuses_a_doc_without_markers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "c.md"
    doc.write_text("# no markers\n")
    assert settings.main([str(doc)]) == 2
    assert settings.BEGIN_MARKER in capsys.readouterr().err
    assert doc.read_text() == "# no markers\n"


def test_secrets_are_marked_in_the_doc() -> None:
    rendered = settings.render_markdown()
    for entry in settings.table().values():
        line = next(x for x in rendered.splitlines() if x.startswith(f"| `{entry.name}`"))
        assert ("(secret)" in line) == entry.secret, line


# --- (b) nobody else reads CONTINUITY_* variables ------------------------------------------------------------------
def _is_environ(node: ast.expr) -> bool:
    """``os.environ`` or a bare ``environ``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _is_env_read(func: ast.expr) -> bool:
    """``os.getenv``/``getenv``, or a method of ``os.environ`` that reads a key."""
    if isinstance(func, ast.Attribute):
        if func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os":
            return True
        return func.attr in ("get", "pop", "setdefault", "__getitem__") and _is_environ(func.value)
    return isinstance(func, ast.Name) and func.id == "getenv"


def _mentions_variable(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str) and "CONTINUITY_" in n.value
               for n in ast.walk(node))


def offences(source: str, filename: str = "<source>") -> list[str]:
    """Direct reads of CONTINUITY_* variables, and variable names spelled as string literals."""
    out = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Call) and _is_env_read(node.func) and node.args and _mentions_variable(node.args[0]):
            out.append(f"{filename}:{node.lineno}: reads a CONTINUITY_* variable directly; use continuity.settings")
        elif isinstance(node, ast.Subscript) and _is_environ(node.value) and _mentions_variable(node.slice):
            out.append(f"{filename}:{node.lineno}: indexes os.environ with a CONTINUITY_* name; use settings")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and VAR_NAME.match(node.value):
            out.append(f"{filename}:{node.lineno}: spells {node.value!r}; use continuity.settings.<NAME>.name")
    return out


@pytest.mark.parametrize("snippet", [
    'import os\nx = os.environ.get("CONTINUITY_NODE")\n',
    'import os\nx = os.getenv("CONTINUITY_NODE", "a")\n',
    'import os\nx = os.environ["CONTINUITY_" + "NODE"]\n',
    'from os import environ\nx = environ.get(f"CONTINUITY_NODE_KEY_{n}")\n',
    'env = {"CONTINUITY_NODE": "a"}\n',
    'import typer\nopt = typer.Option(None, envvar="CONTINUITY_REPOSITORY")\n',
])
def test_the_scan_sees_each_way_of_reading(snippet: str) -> None:
    assert offences(snippet)


def test_the_scan_lets_prose_and_settings_through() -> None:
    ok = ('"""Reads $CONTINUITY_NODE."""\nfrom continuity import settings\n'
          'x = settings.NODE.get()\nmsg = f"set {settings.NODE.name}=a or CONTINUITY_ROOT=b"\n')
    assert offences(ok) == []


def test_no_module_reads_continuity_variables_itself() -> None:
    found = []
    for path in _sources():
        if _rel(path) not in ALLOWED:
            found += offences(path.read_text(encoding="utf-8"), _rel(path))
    assert not found, "\n".join(found)


def test_allow_list_has_no_stale_entries() -> None:
    for rel, why in ALLOWED.items():
        path = ROOT / rel
        if rel == "continuity/settings.py" or not path.exists():
            continue
        assert offences(path.read_text(encoding="utf-8"), rel), f"{rel} ({why}) no longer reads itself: drop it"


# --- (c) the table and the code agree ------------------------------------------------------------------------------
def _settings_attributes(source: str) -> set[str]:
    """Names used as ``settings.X`` or imported by ``from continuity.settings import X``."""
    used = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "settings":
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module == "continuity.settings":
            used |= {a.name for a in node.names}
    return used


def test_every_entry_is_used() -> None:
    used: set[str] = set()
    for path in _sources():
        if _rel(path) != "continuity/settings.py":
            used |= _settings_attributes(path.read_text(encoding="utf-8"))
    dead = sorted(set(settings.table()) - used)
    assert not dead, f"table entries nothing reads (remove them, or wire them up): {dead}"


def test_entries_are_named_after_their_variable() -> None:
    names = []
    for attr, entry in settings.table().items():
        names.append(entry.name)
        if isinstance(entry, settings.Pattern):
            assert entry.prefix == f"{settings.PREFIX}{attr}_" and entry.name.startswith(entry.prefix), attr
        else:
            assert entry.name == settings.PREFIX + attr, attr
        assert entry.doc and entry.read_by and entry.kind, attr
    assert len(names) == len(set(names))


def test_every_variable_mentioned_anywhere_is_in_the_table() -> None:
    """Docs, ops files, compose and bench name only variables the table declares (none undocumented)."""
    table = settings.table().values()
    exact = {e.name for e in table if isinstance(e, settings.Setting)}
    prefixes = [e.prefix for e in table if isinstance(e, settings.Pattern)]
    places = [*SCANNED, ROOT / "ops", ROOT / "docs", ROOT / "examples", ROOT / "bench",
              ROOT / "compose.yaml", ROOT / "README.md"]
    unknown = set()
    for base in places:
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for name in re.findall(r"CONTINUITY_[A-Z0-9_]*[A-Z0-9]", text):
                if name not in exact and not any((name + "_").startswith(p) for p in prefixes):
                    unknown.add(f"{_rel(path)}: {name}")
    assert not unknown, "\n".join(sorted(unknown))


# --- (d) read when asked, never at import --------------------------------------------------------------------------
SPY = r"""
import importlib, json, os, pkgutil, sys

reads = {}
environ_type = type(os.environ)
original = environ_type.__getitem__


def spy(self, key):
    if isinstance(key, str) and key.startswith("CONTINUITY_"):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_name != "<module>":
            frame = frame.f_back
        if frame is not None:  # a read made while some module's top-level code runs
            reads.setdefault(frame.f_globals.get("__name__"), []).append(key)
    return original(self, key)


environ_type.__getitem__ = spy
import continuity, workers
names = ["beat_schedule"]
for pkg in (continuity, workers):
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    if not name.endswith("__main__"):
        importlib.import_module(name)
print("READS " + json.dumps(reads))
"""


def test_importing_every_module_reads_no_setting(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", SPY], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("READS ")][-1]
    reads = {module: keys for module, keys in json.loads(line[len("READS "):]).items()
             if module not in IMPORT_TIME_READERS}
    assert not reads, f"read at import time (move the read into the function that uses it): {reads}"


def test_accessors_see_values_set_after_import(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import beat_schedule
    from continuity.blueprint import load_blueprint
    from continuity.drills import runner
    from continuity.redisd import redis_url

    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path / "s"))
    monkeypatch.setenv("CONTINUITY_REDIS_URL", "redis://example.invalid:1/0")
    monkeypatch.setenv("CONTINUITY_ENV", "staging")
    monkeypatch.setenv("CONTINUITY_PING_INTERVAL", "2.5")
    assert paths.state_dir() == tmp_path / "s"
    assert paths.pulse_file() == tmp_path / "s" / "pulse_history.jsonl"
    assert redis_url() == "redis://example.invalid:1/0"
    assert runner.environment() == "staging"
    pings = beat_schedule.ping_entries(load_blueprint(ROOT / "ops" / "blueprint.yml"))
    assert {e["options"]["expires"] for e in pings.values()} == {2.5}
    monkeypatch.setenv("CONTINUITY_ENV", "production")
    assert runner.environment() == "production"


def test_workers_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import app as app_module
    from workers import drills, failover

    bp_path = ROOT / "ops" / "blueprint.yml"
    from continuity.blueprint import load_blueprint
    from continuity.failover.context import FailoverContext

    bp = load_blueprint(bp_path)
    ctx = FailoverContext(record_id="r1", service=sorted(bp.services)[0], candidate=sorted(bp.nodes)[0],
                          old_primary=sorted(bp.nodes)[-1], epoch=1)
    control_step = next(s for s, t in failover.STEP_TARGET.items() if t == "control")
    monkeypatch.delenv("CONTINUITY_FAILOVER_CONTROL_STEPS", raising=False)
    assert failover._queue_for(bp, control_step, ctx) == bp.queue(ctx.candidate)
    monkeypatch.setenv("CONTINUITY_FAILOVER_CONTROL_STEPS", "control")
    assert failover._queue_for(bp, control_step, ctx) == app_module.CONTROL_QUEUE

    monkeypatch.setenv("CONTINUITY_GAME_DAYS", "off")
    assert drills.game_days_enabled() is False
    monkeypatch.setenv("CONTINUITY_GAME_DAYS", "on")
    assert drills.game_days_enabled() is True

    monkeypatch.setenv("CONTINUITY_VISIBILITY_TIMEOUT", "7")
    monkeypatch.setenv("CONTINUITY_BEAT_LOCK_TIMEOUT", "8")
    monkeypatch.setenv("CONTINUITY_KEY_PREFIX", "other:")
    conf = app_module.make_app().conf
    assert conf.broker_transport_options["visibility_timeout"] == 7
    assert conf.redbeat_lock_timeout == 8
    assert conf.redbeat_key_prefix == "other:beat"


def test_defaults_and_blank_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONTINUITY_VISIBILITY_TIMEOUT", "CONTINUITY_NODE", "CONTINUITY_KEY_PREFIX", "CONTINUITY_GAME_DAYS"):
        monkeypatch.delenv(name, raising=False)
    assert settings.VISIBILITY_TIMEOUT.get() == 600
    assert settings.NODE.get() is None
    assert settings.KEY_PREFIX.get() == "continuity:"
    assert settings.GAME_DAYS.get() is True
    monkeypatch.setenv("CONTINUITY_NODE", "")
    assert settings.NODE.get() is None  # blank means unset for this one...
    monkeypatch.setenv("CONTINUITY_KEY_PREFIX", "")
    assert settings.KEY_PREFIX.get() == ""  # ...but an empty prefix is a prefix
    assert settings.NODE.get({"CONTINUITY_NODE": "core-b"}) == "core-b"  # a child's environment, not ours
    assert settings.NODE_KEY.env_name("sat-1.x") == "CONTINUITY_NODE_KEY_SAT_1_X"


# --- (e) a bad value is a usage error naming the variable ----------------------------------------------------------
@pytest.mark.parametrize("entry, raw", [(settings.VISIBILITY_TIMEOUT, "ten"), (settings.PACK_SIZE, "16M"),
                                        (settings.REDIS_PORT, ""), (settings.PING_INTERVAL, "often")])
def test_bad_number_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, entry: settings.Setting,
                                                    raw: str) -> None:
    monkeypatch.setenv(entry.name, raw)
    with pytest.raises(ContinuityError) as exc:
        entry.get()
    message = str(exc.value)
    assert exc.value.exit_code == ExitCode.USAGE
    assert entry.name in message and repr(raw) in message and "\n" not in message


def test_a_secret_value_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = settings.Setting("CONTINUITY_TEST_SECRET", "integer", settings._integer, 0, "d", "r", secret=True)
    monkeypatch.setenv(secret.name, "hunter2")
    with pytest.raises(ContinuityError) as exc:
        secret.get()
    assert secret.name in str(exc.value) and "hunter2" not in str(exc.value)


def test_the_cli_reports_a_bad_value_as_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_backup_damage import run_cli

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("data")
    repo = str(tmp_path / "repo")
    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    assert run_cli(["backup", "init", "--repo", repo], capsys)[0] == 0
    monkeypatch.setenv("CONTINUITY_PACK_SIZE", "lots")
    rc, _out, err = run_cli(["backup", "snapshot", str(tmp_path / "src"), "--repo", repo], capsys)
    assert rc == ExitCode.USAGE
    assert "CONTINUITY_PACK_SIZE='lots'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_drill_relaunch_records_carry_no_secret_from_the_table() -> None:
    """Rollback actions are stored in Redis, so the worker environment they copy must lose every secret."""
    from continuity.drills.faults import _safe_env

    env = {e.name if isinstance(e, settings.Setting) else e.env_name("core-a"): "x"
           for e in settings.table().values()}
    kept, redacted = _safe_env(env)
    secrets = {name for name in env if settings.is_secret(name)}
    assert secrets and secrets <= set(redacted) and not secrets & set(kept)
    assert "CONTINUITY_NODE" in kept and not settings.is_secret("CONTINUITY_NODE")
