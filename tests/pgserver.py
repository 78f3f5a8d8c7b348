"""A private PostgreSQL server for tests: Debian's binaries, its own data directory and loopback port.

Never the machine's own cluster: ``initdb`` makes a fresh data directory under a temporary directory, the
server listens on a free port on 127.0.0.1 only (and a socket inside its data directory), with trust
authentication for the ``postgres`` role. PostgreSQL refuses to run as root, so as root (CI) the server runs
as the ``postgres`` system user (Debian's package creates it); the client tools (psql, pg_dump, pg_restore)
run as the caller and connect over TCP.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from continuity.redisd import free_port


def pg_bin() -> Path | None:
    """Directory of Debian's versioned PostgreSQL binaries (the newest), else wherever initdb is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


MISSING = ("PostgreSQL is not installed (apt-get install postgresql; `make test` installs it): "
           "the PostgreSQL recipe cannot be tested here")


class PgServer:
    """One postgres process; ``start()`` runs initdb and waits until it accepts connections."""

    def __init__(self, name: str = "pg") -> None:
        binaries = pg_bin()
        if binaries is None:
            raise RuntimeError(MISSING)
        self.bin = binaries
        self.base = Path(tempfile.mkdtemp(prefix=f"continuity-{name}-"))
        self.base.chmod(0o755)  # the postgres user must reach its data directory
        self.data = self.base / "data"
        self.port = free_port()
        self.runas = "postgres" if os.geteuid() == 0 else None

    def tool(self, name: str) -> str:
        return str(self.bin / name)

    def _as_server_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.runas, "--", *argv] if self.runas else argv

    def start(self) -> PgServer:
        self.data.mkdir()
        if self.runas:
            user = pwd.getpwnam(self.runas)
            os.chown(self.data, user.pw_uid, user.pw_gid)
        subprocess.run(self._as_server_user([self.tool("initdb"), "-D", str(self.data), "-U", "postgres",
                                             "--auth=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        opts = (f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        r = subprocess.run(self._as_server_user([self.tool("pg_ctl"), "-D", str(self.data), "-l",
                                                 str(self.data / "server.log"), "-o", opts, "-w", "-t", "60",
                                                 "start"]), capture_output=True, text=True, timeout=90)
        if r.returncode != 0:
            log = (self.data / "server.log").read_text(errors="replace")[-2000:] if (
                self.data / "server.log").exists() else ""
            raise RuntimeError(f"postgres did not start: {r.stderr}{log}")
        return self

    def conn_args(self, db: str = "postgres") -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db]

    def psql(self, sql: str, db: str = "postgres") -> str:
        r = subprocess.run([self.tool("psql"), *self.conn_args(db), "-v", "ON_ERROR_STOP=1", "-Atc", sql],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr}")
        return r.stdout.strip()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._as_server_user([self.tool("pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                                 "-w", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)
