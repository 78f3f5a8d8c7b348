"""``continuity failover approve SERVICE``: a second operator's approval for a forced failover of SERVICE.

A forced failover skips the old primary's own demotion, so when ``ops/stewards.yml`` says so
(``require.forced_failover``, the default) ``failover failover --force`` goes ahead only with a valid approval
by a steward other than the operator forcing it (:func:`check_forced`).
"""

from __future__ import annotations

import time
from typing import Any

import typer

from continuity import identity, paths
from continuity.cli.approve import grant, stewardship
from continuity.cli.failover.common import blueprint, check_service, redis_client, redis_errors
from continuity.cli.output import console, emit_json
from continuity.errors import UsageError
from continuity.state import approvals as approval_state
from continuity.stewardship import load_stewardship, subject

commands = typer.Typer()


@commands.command("approve")
@redis_errors
def approve(service: str = typer.Argument(..., help="Service whose forced failover you approve."),
            for_: str | None = typer.Option(None, "--for", help="How long it holds, e.g. 15m (default 1h, at "
                                                                "most the group's max_validity)."),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Approve, as a second operator, a forced failover of SERVICE (signed with your operator key)."""
    check_service(blueprint(), service)
    out = grant(redis_client(), stewardship(), "failover", service, for_)
    if as_json:
        emit_json(out)
        return
    console.print(f"forced failover of {service} approved by {out['steward']} (key {out['key_id']}) for "
                  f"{(out['expires'] - time.time()) / 60:.0f} min", highlight=False, markup=False)


def check_forced(client: Any, service: str, now: float | None = None) -> list[dict[str, Any]]:
    """The second operator's approval a forced failover of ``service`` needs, verified against ops/stewards.yml;
    :class:`UsageError` (one line) when it is missing. Empty when no approval is required."""
    st = load_stewardship(paths.stewards_path())
    if st is None or not st.spec.forced_failover:
        return []
    key = identity.operator_key()
    subj = subject("failover", service)
    tally = st.tally(subj, approval_state.read(client, subj), time.time() if now is None else now,
                     exclude=key.key_id if key else None, required=1)
    if not tally.ok:
        raise UsageError(f"forced failover of {service} refused: "
                         f"{st.missing(tally, f'continuity failover approve {service}')} (another steward than you)")
    return tally.approvers()
