"""``continuity backup load-redis``: a restored Redis RDB becomes the data directory the fleet starts on.

The backup half of the recipe is a ``kind: command`` source running
``redis-cli --rdb -``; this is the restore half (see
:mod:`continuity.backup.redis_rdb` for why it is more than a copy).
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity import paths
from continuity.backup.redis_rdb import load_rdb
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt
from continuity.cli.output import emit_json

commands = typer.Typer()


@commands.command("load-redis")
def load_redis(rdb: Path = typer.Argument(..., help="The RDB file, as restored from a snapshot."),
               redis_dir: Path | None = typer.Option(None, "--redis-dir",
                                                     help="Redis data directory to fill (default: the embedded "
                                                          "fleet's, <state>/redis)."),
               replace: bool = typer.Option(False, "--replace", help="Move the directory's current data set aside "
                                                                     "first (it is kept, renamed)."),
               json_out: bool = JsonOpt) -> None:
    """Load a Redis RDB into a data directory the fleet's redis-server starts on (stop the fleet first)."""
    target = redis_dir if redis_dir is not None else paths.state_dir() / "redis"
    loaded = load_rdb(rdb, target, replace=replace)
    if json_out:
        emit_json(loaded.as_dict())
        return
    if loaded.replaced:
        output.console.print(f"moved the earlier data set aside to {loaded.replaced}", markup=False)
    output.console.print(f"loaded {loaded.keys} keys ({loaded.persistent_keys} without expiry) into "
                         f"{loaded.redis_dir} in {loaded.duration:.1f}s; start the fleet", markup=False,
                         soft_wrap=True)
