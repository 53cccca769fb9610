"""gateway.httpserver: the connection cap and its accounting, accept() failures logged once a second."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.httpserver import FD_RESERVE, AcceptErrorLimiter, Listener, connection_budget
from tests.support.tls import self_signed


def accept_failure() -> dict[str, Any]:
    return {"message": AcceptErrorLimiter.MESSAGE, "exception": OSError(errno.EMFILE, "Too many open files")}


async def test_accept_failures_are_logged_once_per_interval_with_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    try:
        limiter = AcceptErrorLimiter.install(loop)
        assert AcceptErrorLimiter.install(loop) is limiter
        with caplog.at_level(logging.WARNING, logger="gateway.httpserver"):
            for _ in range(1000):
                loop.call_exception_handler(accept_failure())
            lines = [r for r in caplog.records if r.name == "gateway.httpserver"]
            assert [getattr(r, "failures", None) for r in lines] == [1]
            assert getattr(lines[0], "error", None) == "Too many open files"
            # The interval's timer fires (called here rather than waited for): one line, the rest counted.
            limiter._tick()
            limiter._tick()  # nothing new since: no line, and the timer stops
            lines = [r for r in caplog.records if r.name == "gateway.httpserver"]
            assert [getattr(r, "failures", None) for r in lines] == [1, 999]
            assert limiter._timer is None
    finally:
        loop.set_exception_handler(previous)


async def test_other_loop_errors_still_reach_the_previous_handler() -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        AcceptErrorLimiter.install(loop)
        loop.call_exception_handler({"message": "something else"})
        loop.call_exception_handler(accept_failure())
        assert [c["message"] for c in seen] == ["something else"]
    finally:
        loop.set_exception_handler(previous)


def test_the_connection_cap_leaves_the_reserve_of_the_fd_limit() -> None:
    assert connection_budget(4096, fd_limit=512) == 512 - FD_RESERVE
    assert connection_budget(100, fd_limit=512) == 100
    assert connection_budget(4096, fd_limit=1_048_576) == 4096
    assert connection_budget(4096, fd_limit=FD_RESERVE) == 1


def render(http_status: int, summary: str) -> web.Response:
    return web.json_response({"summary": summary}, status=http_status)


def hello_app() -> web.Application:
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


async def settled(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate`` holds (connection teardown takes a few iterations)."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_a_connection_over_the_cap_is_answered_503_and_closed_and_its_slot_comes_back() -> None:
    listener = Listener(hello_app(), "127.0.0.1", 0, max_connections=1, render_error=render)
    await listener.start()
    try:
        _held_r, held_w = await asyncio.open_connection("127.0.0.1", listener.port)
        await settled(lambda: listener.open_connections == 1)
        r, w = await asyncio.open_connection("127.0.0.1", listener.port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(r.read(), 10)  # closed by the server, not hanging
        w.close()
        await w.wait_closed()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer, answer
        assert answer.endswith(b'{"summary": "too many connections; retry later"}'), answer
        held_w.close()
        await held_w.wait_closed()
        await settled(lambda: listener.open_connections == 0)
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{listener.port}/") as resp:
            assert resp.status == 200 and await resp.text() == "hello"
    finally:
        await listener.stop()


async def test_failed_tls_handshakes_give_their_connection_slots_back(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    listener = Listener(hello_app(), "127.0.0.1", 0, max_connections=2, render_error=render, ssl_context=server_ctx)
    await listener.start()
    try:
        for _ in range(5):  # plain HTTP to the TLS port: each handshake fails
            r, w = await asyncio.open_connection("127.0.0.1", listener.port)
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(r.read(), 10)
            w.close()
            await w.wait_closed()
        await settled(lambda: listener.open_connections == 0)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://127.0.0.1:{listener.port}/", ssl=client_ctx) as resp,
        ):
            assert resp.status == 200 and await resp.text() == "hello"
    finally:
        await listener.stop()


async def test_accept_out_of_descriptors_logs_one_line_and_serves_the_waiting_clients_once_they_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real EMFILE: this process's descriptor limit lowered so that none is free, for a moment."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    listener = Listener(hello_app(), "127.0.0.1", 0, max_connections=1000, render_error=render)
    await listener.start()
    clients = [socket.socket() for _ in range(20)]
    fillers: list[socket.socket] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        for c in clients:
            c.setblocking(False)
        with caplog.at_level(logging.WARNING):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(c.fileno() for c in clients) + 1, hard))
            with contextlib.suppress(OSError):
                while True:  # take every descriptor still free below the limit
                    fillers.append(socket.socket())
            for c in clients:  # connecting needs no new descriptor; accepting them does
                await loop.sock_connect(c, ("127.0.0.1", listener.port))
                await loop.sock_sendall(c, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await settled(lambda: any(r.name == "gateway.httpserver" for r in caplog.records))
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for f in fillers:
                f.close()
            answers = [await asyncio.wait_for(read_all(loop, c), 10) for c in clients]
        assert all(a.startswith(b"HTTP/1.1 200 ") and a.endswith(b"hello") for a in answers), answers
        # one line, and no other failure since: the listener stopped calling accept() for a while
        # rather than failing once per waiting client (asyncio's own server logs each failure)
        assert [(r.name, r.getMessage(), getattr(r, "failures", None)) for r in caplog.records] == [
            ("gateway.httpserver", "accept() failed; new connections wait", 1)
        ]
        assert getattr(caplog.records[0], "error", None) == "Too many open files"
        limiter = loop.get_exception_handler()
        assert isinstance(limiter, AcceptErrorLimiter) and limiter.pending == 0
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for s in clients + fillers:
            s.close()
        await listener.stop()
        loop.set_exception_handler(previous)


async def read_all(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    out = b""
    while chunk := await loop.sock_recv(sock, 65536):
        out += chunk
    return out
