"""A minimal server for restic's REST protocol (v2), for testing the REST backend without rest-server.

rest-server is not packaged by Debian, so the tests run this instead. It
implements the subset the client uses, with rest-server's semantics where
they matter to the tests: uploads land under their final name only once the
whole body has arrived (temporary file, then rename), ranged GETs answer 206,
and ``--append-only`` answers 403 to every DELETE except a lock's and to
replacing an existing file. Run as its own process so a client killed with -9
cannot take the server's state with it::

    python -m tests.rest_server --path DIR [--append-only]   # prints "listening <port>"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TYPES = ("data", "index", "keys", "locks", "snapshots")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = ""
    append_only = False

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _target(self) -> tuple[str, str | None] | None:
        """(type, name) from the request path; None when it names nothing this protocol has."""
        path = self.path.split("?", 1)[0].strip("/")
        if path == "config":
            return "config", None
        kind, _, name = path.partition("/")
        if kind not in TYPES:
            return None
        if name and not NAME.fullmatch(name):
            return None
        return kind, name or None

    def _file(self, kind: str, name: str | None) -> str:
        if kind == "config":
            return os.path.join(self.root, "config")
        assert name is not None
        if kind == "data":
            return os.path.join(self.root, "data", name[:2], name)
        return os.path.join(self.root, kind, name)

    def _reply(self, code: int, body: bytes = b"", ctype: str = "application/octet-stream",
               extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        if self.path.split("?", 1)[0].strip("/") == "" and "create=true" in self.path:
            for kind in TYPES:
                os.makedirs(os.path.join(self.root, kind), exist_ok=True)
            return self._reply(200)
        t = self._target()
        if t is None or (t[0] != "config" and t[1] is None):
            self.rfile.read(length)
            return self._reply(400)
        path = self._file(*t)
        if self.append_only and t[0] != "locks" and os.path.exists(path):
            self.rfile.read(length)
            return self._reply(403)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmpdir = os.path.join(self.root, "tmp")
        os.makedirs(tmpdir, exist_ok=True)
        tmp = os.path.join(tmpdir, uuid.uuid4().hex)
        got = 0
        with open(tmp, "wb") as f:
            while got < length:
                chunk = self.rfile.read(min(1 << 20, length - got))
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        if got != length:  # the client went away mid-upload: nothing under the final name
            os.unlink(tmp)
            self.close_connection = True
            return None
        os.replace(tmp, path)
        return self._reply(200)

    def _get(self) -> None:
        t = self._target()
        if t is None:
            return self._reply(404)
        kind, name = t
        if name is None and kind != "config":
            d = os.path.join(self.root, kind)
            entries = []
            for dirpath, _dirs, files in os.walk(d):
                for fn in files:
                    entries.append({"name": fn, "size": os.stat(os.path.join(dirpath, fn)).st_size})
            if "vnd.x.restic.rest.v2" in self.headers.get("Accept", ""):
                body = json.dumps(entries).encode()
                return self._reply(200, body, "application/vnd.x.restic.rest.v2")
            return self._reply(200, json.dumps([e["name"] for e in entries]).encode(), "application/json")
        try:
            with open(self._file(kind, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return self._reply(404)
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng:
            lo = int(rng.group(1))
            hi = int(rng.group(2)) if rng.group(2) else len(data) - 1
            part = data[lo:hi + 1]
            return self._reply(206, part, extra={"Content-Range": f"bytes {lo}-{lo + len(part) - 1}/{len(data)}"})
        return self._reply(200, data)

    do_GET = _get
    do_HEAD = _get

    def do_DELETE(self) -> None:
        t = self._target()
        if t is None or t[1] is None and t[0] != "config":
            return self._reply(400)
        if self.append_only and t[0] != "locks":  # checked before existence, as rest-server does
            return self._reply(403)
        try:
            os.unlink(self._file(*t))
        except FileNotFoundError:
            return self._reply(404)
        return self._reply(200)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--append-only", action="store_true")
    a = ap.parse_args(argv)
    host, port = a.listen.rsplit(":", 1)
    Handler.root = os.path.abspath(a.path)
    Handler.append_only = a.append_only
    os.makedirs(Handler.root, exist_ok=True)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
