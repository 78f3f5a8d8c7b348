"""A start-hook wrapper for tests: holds a hook at a gate so a test can kill the worker in the middle of it.

    python -m tests.failover_gatehook GATE_DIR NODE EPOCH -- REAL ARGV...

If ``GATE_DIR/hold-NODE-EPOCH`` exists, write ``GATE_DIR/reached-NODE-EPOCH-PID`` and wait (at most a
minute) until the hold file is removed; then run the real hook and exit with its code. If
``GATE_DIR/fail-NODE`` exists, exit 3 at once (a start hook that cannot start the service on that node).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    gate, node, epoch, sep, *real = argv
    assert sep == "--", "usage: GATE_DIR NODE EPOCH -- ARGV..."
    if (Path(gate) / f"fail-{node}").exists():
        print(f"refusing to start on {node} (test gate)", file=sys.stderr)
        return 3
    hold = Path(gate) / f"hold-{node}-{epoch}"
    if hold.exists():
        (Path(gate) / f"reached-{node}-{epoch}-{os.getpid()}").write_text(str(time.time()))
        deadline = time.monotonic() + 60
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return subprocess.run(real).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
