"""A planted violation of "nodes own their disks", for the bed's isolation test.

Node-side code written for one shared disk: it looks into another node's
service directory (``service_dir(other, service)``, as the failover prepare
step's fast path once did) and, like that step did, takes whatever it cannot read for
"nothing there". Nothing on the node fails; the bed must still fail the test.

    python -m tests.netbed_plant write SERVICE          # on a node: write a record into its own service dir
    python -m tests.netbed_plant peek OTHER SERVICE     # on a node: look into OTHER's service dir
"""

from __future__ import annotations

import sys

from continuity import settings
from continuity.services.layout import service_dir


def write(service: str) -> str:
    node = settings.NODE.get() or ""
    d = service_dir(node, service)
    d.mkdir(parents=True, exist_ok=True)
    (d / "ledger.jsonl").write_text('{"seq": 1}\n')
    return f"wrote {d / 'ledger.jsonl'}"


def peek(other: str, service: str) -> str:
    d = service_dir(other, service)
    try:
        names = sorted(p.name for p in d.iterdir())
        records = (d / "ledger.jsonl").read_text().count("\n")
    except OSError:
        return "absent"  # what a shared-disk assumption does with a disk it cannot read
    return f"found {names}, {records} record(s)"


if __name__ == "__main__":
    args = sys.argv[1:]
    print(write(*args[1:]) if args[0] == "write" else peek(*args[1:]))
