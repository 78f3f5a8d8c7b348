"""``continuity operator keygen|whoami``: the operator key whose id is the ``who`` of failover records and pulse events.

See :mod:`continuity.identity` for what the key id proves and what it does not yet.
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity import identity, paths
from continuity.blueprint import load_blueprint
from continuity.cli.output import emit_json
from continuity.errors import UsageError
from continuity.state import heartbeats

app = typer.Typer(help="Operator identity: make an operator key, show who commands act as.", no_args_is_help=True)


@app.command()
def keygen(
    name: str | None = typer.Option(None, "--name", help="Display name kept in the key file (default: user@host)."),
    file: Path | None = typer.Option(None, "--file", help="Where to write it (default: $CONTINUITY_OPERATOR_KEY, "
                                                           "else ~/.config/continuity/operator.ed25519)."),
    json_out: bool = typer.Option(False, "--json", help="Key id and public key as JSON."),
) -> None:
    """Make an operator key (0600; refuses to overwrite one) and print its key id and public key line."""
    key = identity.make_key(name, file)
    if json_out:
        emit_json({"file": str(key.path), "key_id": key.key_id, "name": key.name, "public": key.public.line()})
        return
    typer.echo(f"operator key {key.key_id} ({key.name}) written to {key.path}")
    typer.echo(f"public key: {key.public.line()}")


@app.command()
def whoami(json_out: bool = typer.Option(False, "--json", help="Identity as JSON.")) -> None:
    """Show the identity commands record as `who`, and whether an operator key backs it."""
    me = identity.current()
    if json_out:
        emit_json({"who": me.who, "name": me.name, "key_id": me.key_id, "key_file": str(identity.key_path())})
        return
    typer.echo(me.who)
    if me.key_id is None:
        typer.echo(f"no operator key at {identity.key_path()}: make one with `continuity operator keygen`", err=True)


@app.command("register-nodes")
def register_nodes(
    nodes: list[str] = typer.Argument(None, help="Nodes to register (default: every node of the blueprint)."),
    json_out: bool = typer.Option(False, "--json", help="What was registered, as JSON."),
) -> None:
    """Make each node's heartbeat key (0600, in its own key directory, kept if it exists) and register its public
    half in the node-key registry the detector trusts ($CONTINUITY_NODE_KEYS). `continuity up` does this itself;
    on a real fleet run it where each node's key directory is, as the operator, and ship the registry read-only to
    the control workers."""
    names = list(nodes or load_blueprint(paths.blueprint_path()).nodes)
    bad = [n for n in names if not n or "/" in n or n.startswith(".")]
    if bad:
        raise UsageError(f"not a node name: {bad[0]!r}")
    path = heartbeats.provision(names)
    registered = heartbeats.read_registry(path)
    if json_out:
        emit_json({"registry": str(path), "nodes": {n: registered[n].hex() for n in names}})
        return
    for n in names:
        typer.echo(f"{n}: {registered[n].hex()}")
    typer.echo(f"registry: {path}")
