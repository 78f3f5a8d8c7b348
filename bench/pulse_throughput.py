"""How fast the pulse history records, verifies and replays events.

Every emit fsyncs the history file and its head (durability is the point) and
signs the event (Ed25519, see continuity/pulse_trust.py), so the cost of one
event bounds how chatty the detector and failover chains may be; ``verify``
checks the chain and the signatures. Run: ``.venv/bin/python
bench/pulse_throughput.py [N]`` (``TMPDIR=/dev/shm`` leaves out the fsync cost,
showing the CPU cost alone).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from continuity.pulse import Pulse, verify_file  # noqa: E402
from continuity.redisd import RedisServer, connect  # noqa: E402


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.0f} events/s  ({seconds * 1000 / n:.2f} ms/event)"


def main(n: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        p = Pulse(path=base / "file-only" / "pulse_history.jsonl", node="bench")
        t = time.perf_counter()
        for i in range(n):
            p.emit("bench.tick", data={"i": i})
        print(f"emit, file only        {rate(n, time.perf_counter() - t)}")

        t = time.perf_counter()
        res = verify_file(p.path)
        assert res.ok and res.count == n
        print(f"verify                 {rate(n, time.perf_counter() - t)}")

        with RedisServer(base / "redis", appendonly=True) as server:
            client = connect(server.url)
            q = Pulse(client=client, path=base / "with-redis" / "pulse_history.jsonl", node="bench")
            t = time.perf_counter()
            for i in range(n):
                q.emit("bench.tick", data={"i": i})
            print(f"emit, file + stream    {rate(n, time.perf_counter() - t)}")

            server.stop()
            s = Pulse(client=client, path=base / "spooled" / "pulse_history.jsonl", node="bench")
            for i in range(n):
                s.emit("bench.tick", data={"i": i})
            server.start()
            t = time.perf_counter()
            delivered = s.flush_spool()
            assert delivered == n, delivered
            print(f"spool replay           {rate(n, time.perf_counter() - t)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
