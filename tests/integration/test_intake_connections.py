"""Issue 12, cases 4 and 8: the intake listener under a connection flood and malformed HTTP.

Case 4: with ``RLIMIT_NOFILE`` at 512 and 700 slow connections, a normal client is answered at once
(a 503 envelope, or a closed connection) instead of waiting in the backlog, the admin port answers,
the log stays small (asyncio used to log every failed ``accept()``), and once the slow connections
go the gateway serves and delivers again.

Case 8: a request aiohttp cannot parse is answered 400 with the Pangea envelope, not aiohttp's
text/plain body that quoted the request's bytes (its ``Authorization`` header included).
"""

from __future__ import annotations

import http.client
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import Proc, gateway, start_gateway, stored_messages

TOKEN = "pts_conn_cap_local_token"
SECRET = "Bearer s3cr3t-0f-th3-s3nd3r-9d7c"
ENVELOPE_KEYS = {"request_id", "request_time", "response_time", "status", "summary", "result"}
NOFILE = 512
SLOW_CONNECTIONS = 700
LOG_LIMIT_BYTES = 64 * 1024


def log_event(port: int, message: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """POST one event to the SDK route ``/v1/log``; the status and the decoded envelope."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = json.dumps({"event": {"message": message}}).encode()
        conn.request("POST", "/v1/log", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def get_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def low_nofile() -> None:
    """In the gateway's child process before exec: soft and hard descriptor limits at NOFILE."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture
def own_nofile() -> Iterator[None]:
    """This test process holds 700+ sockets: its soft limit up to the hard one, for the test only."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SLOW_CONNECTIONS + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


EVENT_LOOPS = ["asyncio", "uvloop"]
"""Both loops `run --event-loop` offers (issue 18): the cap and the safe answers hold on each."""


def assert_runs_on(gw: Proc, event_loop: str) -> None:
    """The gateway logged at start that it runs on ``event_loop``."""
    lines = [json.loads(ln) for ln in gw.log().splitlines() if ln.startswith("{") and '"event loop"' in ln]
    assert [ln["event_loop"] for ln in lines] == [event_loop], gw.log()[:2000]


@pytest.mark.parametrize("event_loop", EVENT_LOOPS)
def test_a_connection_flood_beyond_the_fd_limit_refuses_at_once_logs_little_and_recovers(
    tmp_path: Path, own_nofile: None, event_loop: str
) -> None:
    gw = start_gateway(
        tmp_path,
        env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN},
        preexec_fn=low_nofile,
        run_args=["--event-loop", event_loop],
    )
    slow: list[socket.socket] = []
    try:
        assert_runs_on(gw, event_loop)
        intake, admin = gw.ports["intake"], gw.ports["admin"]
        status, body = log_event(intake, "before the flood")
        assert status == 200, body
        # Slow clients: each sends half a request head and then nothing.
        for _ in range(SLOW_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", intake), timeout=10)
            s.sendall(b"POST /v1/log HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)

        # A normal client is refused at once: 503 in the envelope, or its connection closed.
        # (Before the cap it sat in the listen backlog until its own timeout.)
        try:
            status, body = log_event(intake, "during the flood")
        except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
            pass
        else:
            assert status == 503 and set(body) == ENVELOPE_KEYS and body["status"] == "ServiceNotAvailable", body
        # The admin port keeps its own descriptors: probes still answer.
        assert get_status(admin, "/healthz") == 200

        for s in slow:
            s.close()
        slow.clear()
        # Once the slow connections are gone, the gateway serves (and delivers) again.
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = log_event(intake, "after the flood")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway did not serve again after the flood"
            time.sleep(0.1)
        metrics = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode()
        metrics.close()
        assert 'gateway_connections_refused_total{listener="intake",reason="max_connections"}' in text
    finally:
        for s in slow:
            s.close()
        assert gw.terminate() == 0
    got = stored_messages(tmp_path / "data" / "local-audit.db")
    assert sorted(got) == ["after the flood", "before the flood"], got
    log = gw.log()
    assert len(log.encode()) < LOG_LIMIT_BYTES, f"{len(log)} bytes of log:\n{log[:2000]}"
    # the cap keeps accept() from ever running out of descriptors (it used to log each failure)
    assert "out of system resource" not in log and "accept() failed" not in log


MALFORMED = [
    # bare-LF line endings
    b"POST /v1/log HTTP/1.1\nHost: x\nAuthorization: " + SECRET.encode() + b"\nContent-Length: 2\n\n{}",
    # a control character in a header value
    b"POST /v1/log HTTP/1.1\r\nHost: x\r\nAuthorization: " + SECRET.encode() + b"\x01\r\nContent-Length: 2\r\n\r\n{}",
    # a space in a header name
    b"POST /services/collector HTTP/1.1\r\nHost: x\r\nBad Name: " + SECRET.encode() + b"\r\n\r\n",
    # a header line longer than the limit
    b"POST /v1/log HTTP/1.1\r\nHost: x\r\nAuthorization: " + SECRET.encode() + b"A" * 9000 + b"\r\n\r\n",
    # the secret in the request line of an unknown HTTP version
    b"POST /v1/log?token=" + SECRET.encode().replace(b" ", b"+") + b" HTTP/9\r\nHost: x\r\n\r\n",
]


def raw_exchange(port: int, data: bytes) -> bytes:
    """``data`` written straight on a socket; the whole answer, until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize("event_loop", EVENT_LOOPS)
def test_malformed_http_gets_the_pangea_envelope_without_the_request_bytes(tmp_path: Path, event_loop: str) -> None:
    with gateway(tmp_path, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}, run_args=["--event-loop", event_loop]) as gw:
        assert_runs_on(gw, event_loop)
        port = gw.ports["intake"]
        for data in MALFORMED:
            answer = raw_exchange(port, data)
            head, _, raw_body = answer.partition(b"\r\n\r\n")
            assert head.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), (data[:60], answer[:300])
            assert b"s3cr3t" not in answer, answer
            assert b"content-type: application/json" in head.lower(), head
            body = json.loads(raw_body)
            assert set(body) == ENVELOPE_KEYS and body["status"] == "ValidationError", body
            assert body["summary"] == "malformed HTTP request" and body["request_id"].startswith("prq_")
        # the admin port's answer carries no request bytes either
        answer = raw_exchange(gw.ports["admin"], MALFORMED[0])
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")) and b"s3cr3t" not in answer, answer
        # and the process keeps serving
        status, body = log_event(port, "after malformed requests")
        assert status == 200, body
    assert stored_messages(tmp_path / "data" / "local-audit.db") == ["after malformed requests"]
    assert "s3cr3t" not in gw.log()
