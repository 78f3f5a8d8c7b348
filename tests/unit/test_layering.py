"""The functional core stays free of Celery: decisions are testable without a broker.

Only the command line (an imperative shell like ``workers/``) may hand work to
Celery, and only lazily inside the commands that send tasks.
"""

from __future__ import annotations

import ast

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
LAZY_IMPORTERS = {LAUNCHER: CELERY_SIDE, CLI / "output.py": ("rich",)}


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
