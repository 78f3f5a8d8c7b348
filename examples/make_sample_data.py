"""Regenerate the sample fleet's data: a JSON ledger, a SQLite copy of it, key files, telemetry.

Deterministic (fixed seed), so the committed files can be rebuilt byte for byte
and tests can rely on their record counts.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path

HERE = Path(__file__).resolve().parent / "data"
RECORDS = 200


def main() -> None:
    rng = random.Random(20261128)
    HERE.mkdir(parents=True, exist_ok=True)
    rows = []
    for seq in range(1, RECORDS + 1):
        rows.append({"seq": seq, "ts": 1_790_000_000 + seq * 7, "from": f"acct-{rng.randrange(50):03d}",
                     "to": f"acct-{rng.randrange(50):03d}", "amount_cents": rng.randrange(1, 500_000)})
    (HERE / "ledger.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    db = HERE / "ledger.db"
    db.unlink(missing_ok=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE ledger (seq INTEGER PRIMARY KEY, ts INTEGER, src TEXT, dst TEXT, amount_cents INTEGER)")
    con.executemany("INSERT INTO ledger VALUES (?,?,?,?,?)",
                    [(r["seq"], r["ts"], r["from"], r["to"], r["amount_cents"]) for r in rows])
    con.commit()
    con.execute("VACUUM")
    con.close()
    files = HERE / "files"
    files.mkdir(exist_ok=True)
    for i in range(3):
        key = hashlib.sha256(f"sample-signing-key-{i}".encode()).hexdigest()
        (files / f"signing-{i}.pem").write_text(f"-----SAMPLE KEY {i}-----\n{key}\n-----END SAMPLE KEY-----\n")
    (files / "README.txt").write_text("Sample key material for the echo fleet's keystore service. Not secret.\n")
    tele = HERE / "telemetry"
    tele.mkdir(exist_ok=True)
    (tele / "orbit.csv").write_text("t,temp_c,volts\n" + "".join(
        f"{t},{20 + rng.random() * 5:.2f},{11.5 + rng.random():.3f}\n" for t in range(0, 600, 10)))


if __name__ == "__main__":
    main()
