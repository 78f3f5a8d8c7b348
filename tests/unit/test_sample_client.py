"""The sample ledger client treats a primary that dies mid-answer as unacknowledged, never as an exception.

Found by the Sentinel test: a ledger primary demoted while answering cut its response body short, the
client raised ``http.client.IncompleteRead`` (not an ``OSError``), and the writer thread of the drill's load
generator died, so no write was counted again.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.sample.client import LedgerClient


def _read_request(conn: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += conn.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + body


def _serve(answers: list[bytes]) -> tuple[int, threading.Thread]:
    """A one-request-per-answer HTTP server on a free loopback port: each connection gets the next raw answer,
    then the connection is closed."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def run() -> None:
        with srv:
            for answer in answers:
                conn, _ = srv.accept()
                with conn:
                    _read_request(conn)  # all of it: closing on an unread body would reset, not cut short
                    conn.sendall(answer)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t


CUT_SHORT = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 146\r\n\r\n{\"ok\""
NO_STATUS = b""
ACK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


@pytest.fixture
def routes_file(tmp_path: Path) -> Iterator[callable]:
    def make(port: int) -> Path:
        path = tmp_path / "routes.json"
        path.write_text(json.dumps({"services": {"ledger": {"url": f"http://127.0.0.1:{port}"}}}))
        return path
    yield make


@pytest.mark.parametrize("answer", [CUT_SHORT, NO_STATUS], ids=["body-cut-short", "no-status-line"])
def test_an_answer_cut_off_is_not_acknowledged_and_raises_nothing(routes_file, answer: bytes) -> None:
    port, _ = _serve([answer])
    client = LedgerClient(routes_file(port), request_timeout=2)
    status, doc = client._request("POST", f"http://127.0.0.1:{port}/records", {"seq": 1})
    assert status == 0 and doc["error"]


def test_the_write_is_retried_after_an_answer_cut_off_and_then_acknowledged(routes_file) -> None:
    port, server = _serve([CUT_SHORT, ACK])
    client = LedgerClient(routes_file(port), timeout=10, request_timeout=2)
    assert client.append(1) is True
    assert client.retries == 1 and client.last_ack == {"ok": True}
    server.join(5)
