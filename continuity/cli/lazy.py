"""Command groups that import a command's module only when that command runs.

``continuity backup list`` is called by scripts in loops, and ``continuity
--help`` by people who are waiting: importing every command's module up front
pulls in the blueprint's pydantic models, the whole backup engine, redis-py and
rich tables, which roughly doubled their start-up. So each group keeps a
registry (name → module, short help), lists its commands from that registry
and imports the one module the command line names. Every module can then
import what it needs at its top: a module holds one command, or a few that need
the same imports.

A registry entry names a module under ``continuity.cli`` that exposes either

- ``app``: a Typer that *is* this command (a group, e.g. ``backup`` or
  ``backup key``), or
- ``commands``: a Typer holding this command among the module's commands,
  picked by name (e.g. ``continuity.cli.failover.move`` holds ``switchover``
  and ``failover``).

The short help is written in the registry so ``--help`` lists a group without
importing anything; ``tests/unit/test_cli_lazy.py`` checks each one against the
command's own docstring.
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from typing import Any, ClassVar, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup


class LazyCommand(NamedTuple):
    module: str  # under continuity.cli, e.g. "backup.listing": exposes ``app`` (this command) or ``commands``
    help: str  # shown by the group's --help without importing ``module``

    def load(self, name: str) -> Any:
        """Import the module and build its click command called ``name``."""
        module = importlib.import_module(f"continuity.cli.{self.module}")
        holder = getattr(module, "commands", None)
        if holder is not None:
            return typer.main.get_group(holder).commands[name]
        cmd = typer.main.get_group(module.app)
        cmd.name = name
        return cmd


class LazyGroup(TyperGroup):
    """Lists every command of :attr:`registry`, imports one only when it is used.

    A subclass sets ``registry``; commands registered eagerly on the group
    (with ``@app.command()``) still work and are listed after the registry's.
    """

    registry: ClassVar[dict[str, LazyCommand]] = {}
    _help_only = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.registry, *(n for n in self.commands if n not in self.registry)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in self.registry:
            return self.commands.get(cmd_name)
        if self._help_only:  # listing for --help: the registry's text is enough
            return TyperCommand(cmd_name, help=self.registry[cmd_name].help)
        cmd = self.registry[cmd_name].load(cmd_name)
        self.commands[cmd_name] = cmd
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._help_only = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._help_only = False

    def shell_complete(self, ctx: Any, incomplete: str) -> Any:
        """Completing a command name needs names and short help only: a tab press imports no command."""
        self._help_only = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._help_only = False

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """As typer's, but "did you mean" also offers commands not imported yet."""
        try:
            return self._click_resolve_command(ctx, args)
        except Exception as exc:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if matches and isinstance(getattr(exc, "message", None), str):
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, matches))}?"  # type: ignore[attr-defined]
            raise
