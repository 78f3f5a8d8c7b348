"""Real storage servers for backend tests: OpenSSH's sshd, the REST test server, moto's S3.

Each server is private to the test: its own loopback port, its own files
under the test's tmp_path (host key, config, authorized keys), never the
machine's own sshd. A missing sshd skips with the package to install.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, wait_for

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# What an append-only SFTP credential may not ask for: removal, replacing renames, attribute changes
# (which could make a written file writable again) and links.
SFTP_DENIED = "remove,rmdir,posix-rename,setstat,fsetstat,lsetstat,hardlink,symlink"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A repository URL, the environment a client needs to reach it, and the directory the server writes."""

    url: str
    env: dict[str, str] = field(default_factory=dict)
    disk: Path | None = None  # where objects land on disk (None: in moto's memory)
    admin_env: dict[str, str] = field(default_factory=dict)  # full-access credential, when env is append-only
    admin_url: str = ""  # where that credential connects, when not ``url``

    def admin(self) -> tuple[str, dict[str, str]]:
        return self.admin_url or self.url, {**self.env, **self.admin_env}


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@contextlib.contextmanager
def sshd(tmp: Path, *, append_only: bool = False) -> Iterator[Served]:
    """sshd on a free loopback port; with ``append_only`` the client key gets a forced, restricted sftp-server
    and a second (admin) key gets the full one."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        pytest.skip("sshd not installed (Debian package openssh-server; `make test-deps` installs it)")
    d = tmp / "sshd"
    d.mkdir()
    host_pub = _keygen(d / "host_ed25519")
    client_pub = _keygen(d / "client_ed25519")
    admin_pub = _keygen(d / "admin_ed25519")
    if append_only:
        lines = [f'restrict,command="{SFTP_SERVER} -P {SFTP_DENIED}" {client_pub}', f"restrict {admin_pub}"]
    else:
        lines = [f"restrict {client_pub}"]
    (d / "authorized_keys").write_text("\n".join(lines) + "\n")
    port = free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_ed25519'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp {SFTP_SERVER}
LogLevel ERROR
""")
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    try:
        def up() -> bool:
            assert proc.poll() is None, (d / "sshd.log").read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_for(up, timeout=20, what="sshd listening")
        disk = tmp / "sftp-repo"
        base = {"CONTINUITY_SFTP_KNOWN_HOSTS": str(d / "known_hosts")}
        yield Served(f"sftp://{getpass.getuser()}@127.0.0.1:{port}/{disk}",
                     {**base, "CONTINUITY_SFTP_KEY": str(d / "client_ed25519")}, disk,
                     {**base, "CONTINUITY_SFTP_KEY": str(d / ("admin_ed25519" if append_only else "client_ed25519"))})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@contextlib.contextmanager
def rest(tmp: Path, *, append_only: bool = False) -> Iterator[Served]:
    """The REST test server as its own process; with ``append_only`` a second, full-access one on the same
    directory stands for the separate prune credential (rest-server runs one per credential the same way)."""
    disk = tmp / "rest-repo"
    procs: list[subprocess.Popen[str]] = []

    def start(ao: bool) -> str:
        p = subprocess.Popen([sys.executable, "-m", "tests.rest_server", "--path", str(disk),
                              *(["--append-only"] if ao else [])], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        line = p.stdout.readline() if p.stdout else ""
        assert line.startswith("listening "), line
        return f"rest:http://127.0.0.1:{line.split()[1]}/"

    try:
        url = start(append_only)
        yield Served(url, {}, disk, admin_url=start(False) if append_only else "")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


@contextlib.contextmanager
def moto_s3() -> Iterator[Served]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        # moto keeps buckets in process-wide state across servers: a fresh bucket per test
        yield Served(f"s3://torture-{uuid.uuid4().hex[:12]}/repo", env, None)
    finally:
        server.stop()


@contextlib.contextmanager
def served(kind: str, tmp: Path) -> Iterator[Served]:
    if kind == "local":
        yield Served(str(tmp / "local-repo"), {}, tmp / "local-repo")
    elif kind == "s3":
        with moto_s3() as s:
            yield s
    elif kind == "sftp":
        with sshd(tmp) as s:
            yield s
    elif kind == "rest":
        with rest(tmp) as s:
            yield s
    else:
        raise ValueError(kind)


BACKENDS = ("local", "s3", "sftp", "rest")
