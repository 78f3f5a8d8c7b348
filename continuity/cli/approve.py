"""Granting a steward approval from the command line: sign with the operator key, store, record in the pulse.

Shared by ``continuity drill approve`` and ``continuity failover approve``. The statement is signed here with
the operator's own key (``continuity operator keygen``); what counts it later is the verification against
``ops/stewards.yml`` (:mod:`continuity.stewardship`), so this module refuses early, with one line, only to save
a steward from an approval that could never count (no key, or a key that is not a member).
"""

from __future__ import annotations

import json
import time
from typing import Any

from continuity import identity, paths
from continuity.errors import UsageError
from continuity.events import APPROVAL_GRANTED
from continuity.failover.records import pulse_for
from continuity.state import approvals as approval_state
from continuity.stewardship import Stewardship, load_stewardship, sign, subject, valid_for


def stewardship(scenario_names: list[str] | None = None) -> Stewardship:
    path = paths.stewards_path()
    st = load_stewardship(path, scenario_names)
    if st is None:
        raise UsageError(f"no stewards are declared ({path} does not exist): nothing needs approval")
    return st


def grant(client: Any, st: Stewardship, kind: str, name: str, for_: str | None) -> dict[str, Any]:
    """Sign and store an approval of ``kind:name`` by this operator; the approval as JSON-able dict."""
    key = identity.operator_key()
    if key is None:
        raise UsageError(f"an approval is signed with your operator key and there is none at {identity.key_path()}: "
                         "make one with `continuity operator keygen` and have it added to "
                         f"{st.source}")
    steward = st.member(key.key_id)
    if steward is None:
        raise UsageError(f"your operator key {key.key_id} is not a member of steward group {st.group!r} "
                         f"({st.source}); an approval by it would not count")
    now = time.time()
    approval = sign(key, subject(kind, name), now, valid_for(for_, st))
    approval_state.put(client, approval.subject, approval.approver, json.dumps(approval.to_dict()),
                       approval.expires_at - now)
    who = identity.current().who
    pulse_for(client).emit(APPROVAL_GRANTED, data={"who": who, "subject": approval.subject,
                                                   "approver": approval.approver, "expires": approval.expires_at,
                                                   "group": st.group})
    return {"subject": approval.subject, "steward": steward.name, "key_id": approval.approver,
            "expires": approval.expires_at, "group": st.group}
