"""SFTP storage through paramiko: a directory on an SSH server, written like the local backend.

Each object is written to a temporary name, flushed (``fsync@openssh.com``
when the server offers it) and renamed into place, so a reader or a crash
never sees a partial object under its final name. Renames use
``posix-rename@openssh.com`` (which replaces, needed for the lock refresh and
key re-stamping) and fall back to the protocol's plain rename, which OpenSSH
implements as link+unlink and so never replaces: that is what an append-only
server (sftp-server ``-P remove,posix-rename,...``) leaves, and what keeps
write-once objects write-once there.

Host keys are checked against ``known_hosts`` (unknown hosts are refused, as
ssh does with StrictHostKeyChecking); authentication is by key (``CONTINUITY_SFTP_KEY``,
the agent, ``~/.ssh/id_*``), never a password in the URL.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from continuity import settings
from continuity.backup.storage.append_only import refusal
from continuity.backup.storage.base import Backend, NotFound
from continuity.errors import ContinuityError, UsageError


@dataclass(frozen=True)
class SftpTarget:
    user: str | None
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> SftpTarget:
        """``sftp:user@host:/path`` (restic's short form) or ``sftp://user@host:port//abs`` (``/rel``: from home)."""
        if url.startswith("sftp://"):
            m = re.fullmatch(r"sftp://(?:([^@/]+)@)?(\[[^\]]+\]|[^:/]+)(?::(\d+))?/(.*)", url)
            if not m or not m.group(4):
                raise UsageError(f"bad SFTP URL {url!r}: use sftp://user@host:port//absolute/path")
            user, host, port, path = m.group(1), m.group(2).strip("[]"), int(m.group(3) or 22), m.group(4)
        else:
            m = re.fullmatch(r"sftp:(?:([^@]+)@)?(\[[^\]]+\]|[^:]+):(.+)", url)
            if not m:
                raise UsageError(f"bad SFTP URL {url!r}: use sftp:user@host:/path")
            user, host, port, path = m.group(1), m.group(2).strip("[]"), 22, m.group(3)
        return cls(user, host, port, path.rstrip("/") or "/")


class SftpBackend(Backend):
    # every request is a round trip: batch ranged reads like S3 does
    read_window = 8 * 1024 * 1024
    read_gap = 1024 * 1024
    read_threads = 8  # reads wait on the network: overlap them

    def __init__(self, target: SftpTarget, *, key_file: str | None = None, known_hosts: str | None = None) -> None:
        import paramiko

        self.target = target
        user = f"{target.user}@" if target.user else ""
        self.url = f"sftp://{user}{target.host}:{target.port}/{target.path}"
        client = paramiko.SSHClient()
        kh = known_hosts or str(settings.SFTP_KNOWN_HOSTS.get() or os.path.expanduser("~/.ssh/known_hosts"))
        try:
            client.load_host_keys(kh)
        except FileNotFoundError:
            pass
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key = key_file or (str(settings.SFTP_KEY.get()) if settings.SFTP_KEY.is_set() else None)
        try:
            client.connect(target.host, target.port, username=target.user, key_filename=key,
                           look_for_keys=key is None, allow_agent=key is None, timeout=30, banner_timeout=30,
                           auth_timeout=30)
        except paramiko.SSHException as exc:  # unknown host key, auth refused, protocol errors
            raise ContinuityError(f"SFTP {self.url}: {exc}") from None
        except OSError as exc:
            raise ContinuityError(f"SFTP {self.url}: cannot connect: {exc}") from None
        self._client = client
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(30)
        self._transport = transport
        # OpenSSH's sftp-server takes requests up to 256 KiB (its limits@openssh.com); the protocol only
        # promises 32 KiB, paramiko's default. Bigger writes cut an upload's time to a third.
        self._request_size = 255 * 1024 if "OpenSSH" in (transport.remote_version or "") else 32768
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._lock = threading.Lock()
        self._made: set[str] = set()
        home = self._sftp().normalize(".")
        self.root = target.path if target.path.startswith("/") else posixpath.join(home, target.path)

    @classmethod
    def from_url(cls, url: str) -> SftpBackend:
        return cls(SftpTarget.parse(url))

    def _sftp(self) -> Any:
        """One SFTP channel per thread over the one SSH connection: requests of uploader threads interleave."""
        s = getattr(self._local, "sftp", None)
        if s is None:
            import paramiko

            s = paramiko.SFTPClient.from_transport(self._transport)
            self._local.sftp = s
            with self._lock:
                self._sessions.append(s)
        return s

    def _path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"bad object name {name!r}")
        return posixpath.join(self.root, name)

    def _mkdirs(self, d: str) -> None:
        if d in self._made:
            return
        sftp = self._sftp()
        missing = []
        cur = d
        while cur not in ("/", ""):
            try:
                sftp.stat(cur)
                break
            except FileNotFoundError:
                missing.append(cur)
                cur = posixpath.dirname(cur)
        for p in reversed(missing):
            try:
                sftp.mkdir(p, 0o700)
            except OSError:
                try:  # another writer made it first
                    if not stat.S_ISDIR(sftp.stat(p).st_mode or 0):
                        raise
                except FileNotFoundError:
                    raise
        with self._lock:
            self._made.add(d)

    def read(self, name: str) -> bytes:
        try:
            with self._sftp().open(self._path(name), "rb") as f:
                f.prefetch()
                return bytes(f.read())
        except FileNotFoundError:
            raise NotFound(name) from None

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            with self._sftp().open(self._path(name), "rb") as f:
                # clamp to the size: paramiko's pipelined readv waits forever for bytes past the end
                # (a torn object), where a local pread just returns short
                end = min(offset + length, int(f.stat().st_size or 0))
                if end <= offset:
                    return b""
                step = 32768
                return b"".join(f.readv([(o, min(step, end - o)) for o in range(offset, end, step)]))
        except FileNotFoundError:
            raise NotFound(name) from None

    def write(self, name: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        path = self._path(name)
        self._mkdirs(posixpath.dirname(path))
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        sftp = self._sftp()
        with sftp.open(tmp, "wbx") as f:  # x: exclusive create, never an existing file
            f.MAX_REQUEST_SIZE = self._request_size
            f.set_pipelined(True)
            view = memoryview(data)
            for i in range(0, len(view), 1 << 20):
                f.write(view[i:i + (1 << 20)])
            f.flush()
            self._fsync(sftp, f)
        try:
            sftp.posix_rename(tmp, path)
        except PermissionError:
            self._plain_rename(sftp, tmp, path, name)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM) or "not supported" in str(exc).lower():
                self._plain_rename(sftp, tmp, path, name)
            else:
                raise

    def _plain_rename(self, sftp: Any, tmp: str, path: str, name: str) -> None:
        try:
            sftp.rename(tmp, path)
        except OSError:
            exists = self.exists(name)
            try:
                sftp.remove(tmp)
            except OSError:
                pass  # an append-only server keeps the temporary file; list() never shows it
            if exists:
                raise refusal(self.url, f"replacing {name}") from None
            raise

    @staticmethod
    def _fsync(sftp: Any, f: Any) -> None:
        """Durable before the rename where the server can say so (OpenSSH's fsync@openssh.com)."""
        try:
            from paramiko.sftp import CMD_EXTENDED

            sftp._request(CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except OSError:
            pass  # the server does not offer it: the close is all SFTP promises

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        sftp = self._sftp()
        stack = [prefix.strip("/")]
        while stack:
            rel = stack.pop()
            try:
                entries = sftp.listdir_attr(self._path(rel) if rel else self.root)
            except FileNotFoundError:
                continue
            for e in entries:
                child = f"{rel}/{e.filename}" if rel else e.filename
                if stat.S_ISDIR(e.st_mode or 0):
                    stack.append(child)
                elif ".tmp-" not in e.filename:  # a writer died before its rename: not an object
                    yield child, int(e.st_size or 0)

    def delete(self, name: str) -> None:
        try:
            self._sftp().remove(self._path(name))
        except FileNotFoundError:
            pass
        except PermissionError:
            raise refusal(self.url, f"deleting {name} (the SFTP server refused it)") from None

    def exists(self, name: str) -> bool:
        try:
            self._sftp().stat(self._path(name))
            return True
        except FileNotFoundError:
            return False

    def can_delete(self) -> bool:
        """Ask the server: removing a name that cannot exist says "no such file", or "permission denied"."""
        if self.append_only:
            return False
        try:
            self._sftp().remove(self._path(f"snapshots/.delete-probe-{uuid.uuid4().hex}"))
        except FileNotFoundError:
            return True
        except PermissionError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            try:
                s.close()
            except Exception:
                pass
        self._client.close()


__all__ = ["SftpBackend", "SftpTarget"]
