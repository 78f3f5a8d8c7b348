"""``continuity drill action add|approve|close|list``: postmortem action items with owners, due dates and a trail.

Every change is a statement signed with the operator's key (see :mod:`continuity.actions`), stored in Redis and
recorded in the pulse; ``list`` (and ``continuity report``) count only statements that verify.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import typer

from continuity import actions, identity, paths
from continuity.cli import output
from continuity.cli.output import console, emit_json
from continuity.durations import parse_duration
from continuity.errors import UsageError
from continuity.events import POSTMORTEM_ACTION
from continuity.failover import records
from continuity.failover.records import pulse_for
from continuity.redisd import connect
from continuity.signing import SigningKey
from continuity.state import actions as action_state
from continuity.state import drills as drill_state
from continuity.stewardship import Stewardship, load_stewardship

app = typer.Typer(help="Postmortem action items: add one (owner, due date), approve or close it, list them.",
                  no_args_is_help=True)


def parse_due(text: str, now: float) -> float:
    """``--due``: a date (2026-12-24, end of that day UTC), an ISO time, or a duration from now (14d)."""
    try:
        if len(text) == 10 and text[4] == "-":
            return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() + 86399
        if "T" in text:
            t = datetime.fromisoformat(text)
            return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
        return now + parse_duration(text)
    except ValueError:
        raise UsageError(f"--due {text!r}: expected a date (2026-12-24), an ISO time or a duration (14d)") from None


def _text(option: str, value: str) -> str:
    value = value.strip()
    if not value or len(value) > actions.MAX_TEXT or any(c in value for c in "\r\n"):
        raise UsageError(f"{option}: one line of 1 to {actions.MAX_TEXT} characters")
    return value


def _key() -> SigningKey:
    key = identity.operator_key()
    if key is None:
        raise UsageError(f"action items are signed with your operator key and there is none at {identity.key_path()}:"
                         " make one with `continuity operator keygen`")
    return key


def _stewards() -> Stewardship | None:
    return load_stewardship(paths.stewards_path())


def _step(client: Any, item_id: str, op: str, note: str, stewards: Stewardship | None) -> actions.ActionItem:
    """Append a signed ``op`` to an item's trail (after checking it would count), record it in the pulse."""
    key = _key()
    if stewards is not None and stewards.member(key.key_id) is None:
        raise UsageError(f"your operator key {key.key_id} is not a member of steward group {stewards.group!r} "
                         f"({stewards.source}); a {op} by it would not count")
    if op == "approve" and stewards is None:
        raise UsageError(f"no stewards are declared ({paths.stewards_path()} does not exist): there is nobody to "
                         "approve an action item; close it when done")
    raws = action_state.read(client, item_id)
    item = actions.fold(item_id, raws, stewards)
    if item is None:
        raise UsageError(f"no action item {item_id!r} (see `continuity drill action list`)")
    if item.closed is not None:
        raise UsageError(f"action item {item_id} is already closed")
    st = actions.sign(key, item_id, op, {"note": note}, item.head, time.time())
    if not action_state.append(client, item_id, len(raws), st.to_json()):
        raise UsageError(f"action item {item_id} changed while this {op} was made: run it again")
    _pulse(client, item, op, key.key_id)
    done = actions.fold(item_id, [*raws, st.to_json()], stewards)
    assert done is not None
    return done


def _pulse(client: Any, item: actions.ActionItem, op: str, key_id: str) -> None:
    pulse_for(client).emit(POSTMORTEM_ACTION, data={"who": identity.current().who, "item": item.id, "op": op,
                                                     "record": item.record, "owner": item.owner, "due": item.due,
                                                     "key_id": key_id})


def _say(item: actions.ActionItem, as_json: bool, line: str) -> None:
    if as_json:
        emit_json(item.to_dict(time.time()))
    else:
        console.print(line, highlight=False, markup=False)


@app.command("add")
def add(
    record: str = typer.Argument(..., help="The drill or failover record id the postmortem is about."),
    title: str = typer.Option(..., "--title", help="What is to be done, one line."),
    owner: str = typer.Option(..., "--owner", help="Who does it."),
    due: str = typer.Option(..., "--due", help="When: a date (2026-12-24), an ISO time or a duration (14d)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Add a postmortem action item (owner, due date), signed with your operator key and recorded in the pulse."""
    now = time.time()
    record, title, owner = _text("RECORD", record), _text("--title", title), _text("--owner", owner)
    when = parse_due(due, now)
    key = _key()
    client = connect()
    if drill_state.read_record(client, record) is None and records.get_record(client, record) is None:
        raise UsageError(f"no drill or failover record {record!r} (see `continuity drill report`, "
                         "`continuity failover history`)")
    item_id = actions.new_id(record, title, now)
    st = actions.sign(key, item_id, "add", {"record": record, "title": title, "owner": owner, "due": when}, "", now)
    if not action_state.append(client, item_id, 0, st.to_json()):
        raise UsageError(f"action item {item_id} already exists: run it again")
    item = actions.fold(item_id, [st.to_json()], _stewards())
    assert item is not None
    _pulse(client, item, "add", key.key_id)
    _say(item, as_json, f"{item_id} added: {title} (owner {owner}, due {_date(when)})")


@app.command("approve")
def approve(
    item_id: str = typer.Argument(..., help="The action item id (see `continuity drill action list`)."),
    note: str = typer.Option("", "--note", help="Why, kept in the trail."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Approve an action item as a steward (signed with your operator key, recorded in the pulse)."""
    item = _step(connect(), item_id, "approve", note.strip()[:actions.MAX_TEXT], _stewards())
    _say(item, as_json, f"{item_id} approved ({len(item.approvals)} approval(s))")


@app.command("close")
def close(
    item_id: str = typer.Argument(..., help="The action item id (see `continuity drill action list`)."),
    note: str = typer.Option(..., "--note", help="What was done (a link, a commit), kept in the trail."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Close an action item (a steward, when stewards are declared), signed and recorded in the pulse."""
    item = _step(connect(), item_id, "close", _text("--note", note), _stewards())
    _say(item, as_json, f"{item_id} closed")


@app.command("list")
def list_items(
    show_all: bool = typer.Option(False, "--all", help="Closed items too."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Action items (open ones first, by due date), with the trail that verifies and any statement that did not."""
    now = time.time()
    items = [i for i in actions.load(connect(), _stewards()) if show_all or i.closed is None]
    if as_json:
        emit_json([i.to_dict(now) for i in items])
        return
    table = output.table("item", "status", "due", "owner", "record", "title", "approvals", keep=("item",))
    for i in items:
        status = "OVERDUE" if i.overdue(now) else i.status
        table.add_row(i.id, status, _date(i.due), i.owner, i.record, i.title, str(len(i.approvals)))
    console.print(table)
    for i in items:
        for why in i.ignored:
            console.print(f"{i.id}: not counted: {why}", highlight=False, markup=False)


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))
