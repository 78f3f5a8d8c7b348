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


def test_cli_reaches_celery_only_inside_commands() -> None:
    for path in sorted((ROOT / "continuity" / "cli").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in FORBIDDEN for n in names), f"{path.name}:{node.lineno}"
