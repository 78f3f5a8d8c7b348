"""``python -m continuity.replication --node N``: one node's replicator (see :mod:`continuity.replication.node`).

Started and supervised by the node's worker (``workers/replication.py``); it exits when its parent does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from continuity import paths, settings
from continuity.blueprint import load_blueprint
from continuity.errors import ContinuityError
from continuity.pulse import Pulse
from continuity.redisd import connect
from continuity.replication.node import Replicator
from continuity.state.heartbeats import ensure_node_key

PARENT_CHECK = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m continuity.replication",
                                     description="Run one node's replicator until terminated.")
    parser.add_argument("--node", default=settings.NODE.get(), help="The node (default: $CONTINUITY_NODE).")
    parser.add_argument("--parent", type=int, default=0, help="Exit when this process is gone (the worker).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s replicator %(levelname)s %(message)s")
    if not args.node:
        print("replicator: no node (--node or $CONTINUITY_NODE)", file=sys.stderr)
        return 2
    try:
        bp = load_blueprint(paths.blueprint_path())
        client = connect(socket_timeout=1.0, socket_connect_timeout=1.0)
        pulse = Pulse(client=connect(socket_timeout=1.0, socket_connect_timeout=1.0), node=args.node)
        ensure_node_key(args.node)  # as the node agent does: the same key file, whoever comes first makes it
        rep = Replicator(bp, args.node, client, pulse=pulse, poll=settings.REPLICATION_POLL.get())
        rep.start()
    except (ContinuityError, ValueError, OSError) as exc:
        print(f"replicator {args.node}: {exc}", file=sys.stderr)
        return 1
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(PARENT_CHECK):
        if args.parent and os.getppid() != args.parent:
            break  # the worker is gone: so are we (a node's replicator never outlives its worker)
    rep.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
