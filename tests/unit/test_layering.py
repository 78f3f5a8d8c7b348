"""The layers of the house, enforced: who may import whom.

* The functional core stays free of Celery: decisions are testable without a broker.
  Only the command line (an imperative shell like ``workers/``) may hand work to
  Celery, and only lazily inside the commands that send tasks.
* ``detect`` and ``failover`` never import each other (what both need lives in ``state``
  and ``services``; the Celery shell wires the planner into the sweep); ``backup`` never
  imports ``failover`` (failover may use backup: prepare restores a snapshot); ``services``
  sits below all three; ``state`` imports only ``state``, ``paths``, ``errors``, ``settings``.
* The pure deciders import without Redis, Celery or kombu, and say so in their docstring.

Every import counts, at module level or inside a function (ast.walk sees both).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT

FORBIDDEN = ("celery", "kombu", "redbeat", "workers")


def _imports(path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def test_core_never_imports_celery() -> None:
    offenders = []
    for path in sorted((ROOT / "continuity").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1] == "cli":
            continue
        for line, name in _imports(path):
            if name.split(".")[0] in FORBIDDEN:
                offenders.append(f"{rel}:{line}: imports {name}")
    assert not offenders, "\n".join(offenders)


CLI = ROOT / "continuity" / "cli"
LAUNCHER = CLI / "launch.py"
# beat_schedule collects its entries from the workers modules: importing it imports Celery
CELERY_SIDE = (*FORBIDDEN, "beat_schedule")
# modules whose functions may import: the launcher (Celery, on demand) and output (rich, only for humans)
# the snapshot command defers the set schema (pydantic) and the backup api: a snapshot of paths, the common
# scripted case, needs neither, and they cost ~15 MiB of its peak memory and 0.3 s of its start (issue 13)
LAZY_IMPORTERS = {LAUNCHER: CELERY_SIDE, CLI / "output.py": ("rich",), CLI / "backup" / "snapshot.py": ("continuity",)}


def _function_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [n for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)]
    return found


def _names(node: ast.Import | ast.ImportFrom) -> list[str]:
    return [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]


def test_cli_reaches_celery_only_through_the_launcher() -> None:
    """No CLI module but ``continuity/cli/launch.py`` imports workers, beat_schedule or Celery, at any depth."""
    offenders = []
    for path in sorted(CLI.rglob("*.py")):
        if path == LAUNCHER:
            continue
        for line, name in _imports(path):
            if name.split(".")[0] in CELERY_SIDE:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {name} (go through continuity.cli.launch)")
    assert not offenders, "\n".join(offenders)


def test_launcher_imports_celery_only_when_called() -> None:
    """Importing the launcher (as the failover and process commands do) must not import Celery."""
    tree = ast.parse(LAUNCHER.read_text())
    for node in tree.body:  # module level only
        if isinstance(node, ast.Import | ast.ImportFrom):
            assert not any(n.split(".")[0] in CELERY_SIDE for n in _names(node)), f"launch.py:{node.lineno}"
    assert _function_imports(tree), "the launcher is where the CLI's lazy Celery imports live"


def test_cli_imports_at_module_level_except_lazy_ones_with_a_reason() -> None:
    """Each CLI module imports what it needs at its top (commands are lazy per module, see continuity.cli.lazy).

    Only the launcher and the output helpers import inside functions, only
    what they exist to defer, and each such import says why in a comment.
    """
    offenders = []
    for path in sorted(CLI.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in _function_imports(ast.parse(source)):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            allowed = LAZY_IMPORTERS.get(path)
            if allowed is None:
                offenders.append(f"{where}: import inside a function (move it to the module's top)")
                continue
            if not all(n.split(".")[0] in allowed for n in _names(node)):
                offenders.append(f"{where}: {path.name} defers only {', '.join(allowed)}")
            if not any("# why" in line for line in lines[max(node.lineno - 3, 0):node.lineno]):
                offenders.append(f"{where}: a deferred import needs a `# why` comment")
    assert not offenders, "\n".join(offenders)


# --- package rules ---------------------------------------------------------------------------------------------
def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _targets(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in it: ``from a import b`` counts as ``a.b`` when b is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_of(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if _is_module(sub) else base))
    return out


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _offenders(package: str, allowed: Callable[[str], bool]) -> list[str]:
    root = ROOT.joinpath(*package.split("."))
    out = []
    for path in sorted(root.rglob("*.py")):
        for line, name in _targets(path):
            if _within(name, "continuity") and not allowed(name):
                out.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    return out


NEVER = {
    "continuity.detect": ("continuity.failover",),
    "continuity.failover": ("continuity.detect",),
    "continuity.backup": ("continuity.failover",),
    "continuity.services": ("continuity.detect", "continuity.failover", "continuity.backup", "continuity.drills"),
}


@pytest.mark.parametrize("package", sorted(NEVER))
def test_package_does_not_import_the_packages_above_or_beside_it(package: str) -> None:
    forbidden = NEVER[package]
    offenders = _offenders(package, lambda name: not any(_within(name, f) for f in forbidden))
    assert not offenders, f"{package} must not import {', '.join(forbidden)}:\n" + "\n".join(offenders)


# continuity.signing: the Ed25519 key-file format, a leaf (it imports only errors), for heartbeat keys
STATE_MAY_IMPORT = ("continuity.state", "continuity.paths", "continuity.errors", "continuity.settings",
                    "continuity.signing")


def test_state_imports_only_state_paths_errors_settings() -> None:
    offenders = _offenders("continuity.state", lambda name: any(_within(name, a) for a in STATE_MAY_IMPORT))
    assert not offenders, "continuity.state is the bottom layer:\n" + "\n".join(offenders)


# --- the pure deciders -----------------------------------------------------------------------------------------
DECIDERS = (
    "continuity.detect.detector",
    "continuity.detect.mode",
    "continuity.detect.recovery",
    "continuity.detect.outage",
    "continuity.failover.planner",
    "continuity.failover.prepare",
    "continuity.services.survivors",
    "continuity.drills.measure",
    "continuity.backup.retention",
)
BLOCKED = ("redis", "celery", "kombu", "redbeat", "fakeredis", "workers")

# imports the module with every Redis / Celery client made unimportable, then checks none slipped in
NO_REDIS = """
import importlib, sys
BLOCKED = {blocked!r}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not available in this test")
        return None

sys.meta_path.insert(0, Refuse())
importlib.import_module(sys.argv[1])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
"""


@pytest.mark.parametrize("module", DECIDERS)
def test_pure_decider_imports_without_redis_or_celery(module: str) -> None:
    proc = subprocess.run([sys.executable, "-c", NO_REDIS.format(blocked=BLOCKED), module], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{module} needs Redis or Celery to import:\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("module", DECIDERS)
def test_pure_decider_says_so(module: str) -> None:
    """A reader opening the file learns it decides and does no I/O, and where its I/O shell is."""
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "Pure decider" in doc, f"{module}: the docstring must say 'Pure decider' (and name its shell)"


def test_the_refusal_works() -> None:
    """The no-Redis import above really refuses Redis (else every decider would pass by accident)."""
    proc = subprocess.run([sys.executable, "-c", NO_REDIS.format(blocked=BLOCKED), "continuity.redisd"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "redis is not available" in proc.stderr


# --- one owner of shared state ----------------------------------------------------------------------------------
KEY_CALL = re.compile(r"\bkeys\.[a-z_]+\(")


def test_no_redis_key_is_built_outside_state() -> None:
    """Every key is built, read and written by its owner in continuity/state (one place per concept), so a key's
    name, value type and parser cannot drift apart between modules."""
    offenders = []
    for base in ("continuity", "workers"):
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("continuity", "state"):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if KEY_CALL.search(code) and "``" not in code:
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# --- one connection factory ---------------------------------------------------------------------------------------
FACTORY = ROOT / "continuity" / "redisd.py"
CLIENT_CLASSES = {"Redis", "StrictRedis", "Sentinel", "ConnectionPool", "RedisCluster"}


def _client_builders(source: str) -> list[tuple[int, str]]:
    """Calls that build a Redis client (``*.from_url`` on anything Redis, or a client class) and imports of
    redis-py's asyncio/Sentinel clients."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            last = func.rsplit(".", 1)[-1]
            if (last == "from_url" and "redis" in func.lower()) or last in CLIENT_CLASSES:
                found.append((node.lineno, func))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            found += [(node.lineno, f"import {n}") for n in _names(node)
                      if n.startswith(("redis.asyncio", "redis.sentinel"))]
    return found


def test_only_redisd_builds_redis_clients() -> None:
    """Every component connects through continuity.redisd.connect / connect_async: one place knows the URL forms
    (sentinel:// above all), so no component fails on a URL the others accept."""
    offenders = []
    paths = [*sorted((ROOT / "continuity").rglob("*.py")), *sorted((ROOT / "workers").rglob("*.py")),
             ROOT / "beat_schedule.py"]
    for path in paths:
        if path == FACTORY:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in _client_builders(path.read_text())]
    assert not offenders, "build Redis clients with continuity.redisd.connect:\n" + "\n".join(offenders)


def test_the_client_builder_check_sees_what_it_forbids() -> None:
    source = ("import redis\nimport redis.asyncio as aioredis\nfrom redis.sentinel import Sentinel\n"
              "a = redis.Redis.from_url(u)\nb = aioredis.Redis.from_url(u)\nc = Sentinel([])\n"
              "d = S3Backend.from_url(u)\n")
    assert [line for line, _ in _client_builders(source)] == [2, 3, 4, 5, 6]
