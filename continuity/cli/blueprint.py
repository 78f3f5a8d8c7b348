"""`continuity blueprint check|render`: validate the fleet declaration and publish what it implies.

``check`` is what an operator runs after editing ``ops/blueprint.yml`` and what
CI runs before anything acts on it; ``render`` keeps the architecture document
honest. Both exit 2 with ``file:line: key.path: message`` on a bad blueprint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import typer

from continuity import paths
from continuity.blueprint import Blueprint, load_blueprint
from continuity.blueprint_render import render_section, replace_section
from continuity.cli.output import emit_json
from continuity.errors import ConfigError, ContinuityError, UsageError

app = typer.Typer(help="Validate the blueprint and render what it implies.", no_args_is_help=True)

DEFAULT_DOC = Path("docs/continuity/architecture.md")

FileOpt = typer.Option(None, "--file", "-f",
                       help="Blueprint file (default: $CONTINUITY_BLUEPRINT or ops/blueprint.yml).")


def _blueprint_file(file: Path | None) -> Path:
    return file if file is not None else paths.blueprint_path()


def _display(path: Path) -> str:
    """Paths relative to the project root when inside it: stable in generated text and short in messages."""
    try:
        return str(path.resolve().relative_to(paths.root()))
    except ValueError:
        return str(path)


def summary(bp: Blueprint, file: str) -> dict[str, Any]:
    tiers = {str(t): bp.tier_services([t]) for t in range(4)}
    return {
        "ok": True,
        "file": file,
        "fleet": bp.model.fleet,
        "nodes": {nid: {"kind": n.kind, "queue": bp.queue(nid), "primary_for": bp.services_on(nid)}
                  for nid, n in sorted(bp.nodes.items())},
        "services_per_tier": tiers,
        "minimal_continuity_set": bp.minimal_continuity_set(),
        "degradation_order": bp.degradation_order(),
    }


@app.command()
def check(
    file: Path | None = FileOpt,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable summary (or error) on stdout."),
) -> None:
    """Validate the blueprint: exit 0 with a summary, or 2 naming file:line and key path of the first mistake."""
    path = _blueprint_file(file)
    try:
        bp = load_blueprint(path)
    except ConfigError as exc:
        if json_out:
            emit_json({"ok": False, "file": exc.file, "line": exc.line, "key_path": exc.key_path,
                       "message": exc.message, "error": str(exc)})
        raise
    info = summary(bp, _display(path))
    if json_out:
        emit_json(info)
        return
    kinds: dict[str, int] = {}
    for n in bp.nodes.values():
        kinds[n.kind] = kinds.get(n.kind, 0) + 1
    typer.echo(f"{info['file']}: ok — fleet {bp.model.fleet}, {len(bp.nodes)} nodes "
                  f"({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}), {len(bp.services)} services")
    for tier, services in info["services_per_tier"].items():
        if services:
            typer.echo(f"  tier {tier}: {', '.join(services)}")
    typer.echo(f"  minimal continuity set: {', '.join(info['minimal_continuity_set']) or '(empty)'}")
    order = " → ".join(", ".join(g) for g in info["degradation_order"]) or "(nothing can be shed)"
    typer.echo(f"  degradation order: {order}")


def _write_atomic(path: Path, text: str) -> None:
    """Readers (and a concurrent `--check`) see the old document or the new one, never half of each."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read_doc(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise UsageError(f"{path}: document not found (create it with the BEGIN/END blueprint markers)") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a Markdown file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


@app.command()
def render(
    file: Path | None = FileOpt,
    doc: Path = typer.Option(None, "--doc", help="Document holding the generated section "
                                                 "(default: docs/continuity/architecture.md)."),
    check_only: bool = typer.Option(False, "--check", help="Write nothing; exit 1 if the document is out of date."),
) -> None:
    """Regenerate the marked section of the architecture document from the blueprint."""
    path = _blueprint_file(file)
    bp = load_blueprint(path)
    doc_path = doc if doc is not None else paths.root() / DEFAULT_DOC
    current = _read_doc(doc_path)
    updated = replace_section(current, render_section(bp, _display(path)), file=str(doc_path))
    if check_only:
        if updated != current:
            raise ContinuityError(f"{doc_path}: generated section is out of date with {_display(path)}; "
                                  "run `continuity blueprint render`")
        typer.echo(f"{doc_path}: up to date")
        return
    if updated == current:
        typer.echo(f"{doc_path}: already up to date")
        return
    try:
        _write_atomic(doc_path, updated)
    except OSError as exc:
        raise ContinuityError(f"{doc_path}: cannot write: {exc.strerror or exc}") from None
    typer.echo(f"{doc_path}: generated section updated from {_display(path)}")

