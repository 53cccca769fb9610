"""The gateway's aiohttp listeners: a connection cap, safe protocol-error answers, fd limits.

aiohttp's ``TCPSite`` accepts every connection the kernel hands it and answers a request it
cannot parse with a text/plain 400 that quotes the offending bytes (an ``Authorization``
header included).  :class:`Listener` serves an ``Application`` the same way but

* holds at most ``max_connections`` connections: one beyond it gets a 503 and is closed at once,
  so the process keeps file descriptors for its upstream, its files and the admin port;
* answers malformed HTTP (and aiohttp's own 500/504) with the body ``render_error`` builds,
  which never holds request bytes.

:func:`raise_fd_limit` and :func:`connection_budget` size the cap from ``RLIMIT_NOFILE``, and
:class:`AcceptErrorLimiter` logs failed ``accept()`` calls (the listener's own, and asyncio's for
any other server in the process) in one line a second with their count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)

ADMIN_MAX_CONNECTIONS = 64
"""Connections the admin listener holds (probes and scrapers need few)."""

FD_RESERVE = ADMIN_MAX_CONNECTIONS + 128
"""Descriptors kept out of the intake cap: the admin port, upstream connections, SQLite files, Kafka."""

protocol_log = logging.getLogger(__name__ + ".protocol")
"""aiohttp's protocol-level log (malformed requests), given to every listener in place of ``aiohttp.server``."""


class _MalformedRequestFilter(logging.Filter):
    """Logs a malformed request as one info line: no traceback and none of the request's bytes.

    aiohttp logs a request it cannot parse at error level with the exception, whose message
    quotes the offending request line or header line -- an ``Authorization`` value included.
    Anyone on the internet can send those, so they are a client's problem, not the gateway's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.msg, record.args = "malformed HTTP request refused", None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.error = type(exc).__name__
        record.remote = str(remote) if remote is not None else None
        return protocol_log.isEnabledFor(logging.INFO)


protocol_log.addFilter(_MalformedRequestFilter())


ErrorRenderer = Callable[[int, str], web.Response]
"""``(http_status, summary) -> response``: the listener's error body (no request bytes in it)."""

_SUMMARIES = {
    400: "malformed HTTP request",
    500: "internal error",
    503: "too many connections; retry later",
    504: "request took too long",
}


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file descriptor limit", extra={"soft": soft, "hard": hard, "error": str(exc)})
    return soft


def connection_budget(configured: int, fd_limit: int | None = None) -> int:
    """``configured``, lowered to fit the fd limit less :data:`FD_RESERVE` (at least 1)."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd_limit == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, fd_limit - FD_RESERVE))


class AcceptErrorLimiter:
    """Event-loop exception handler: ``accept()`` failures logged at most once per interval.

    When the process runs out of descriptors, asyncio's selector loop calls the exception handler
    with ``socket.accept() out of system resource`` for every failed ``accept()`` -- up to the
    listen backlog per wake-up, thousands of lines a second.  This handler logs the first at once
    and then one line per interval with the count since the last line; every other context goes
    to the handler that was installed before (or the loop's default).
    """

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_secs: float = 1.0) -> None:
        self.loop = loop
        self.interval_secs = interval_secs
        self.previous = loop.get_exception_handler()
        self.pending = 0
        self.error = ""
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> AcceptErrorLimiter:
        """Install on ``loop`` (once: an installed limiter is returned as is)."""
        current = loop.get_exception_handler()
        if isinstance(current, AcceptErrorLimiter):
            return current
        limiter = cls(loop)
        loop.set_exception_handler(limiter)
        return limiter

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.report(context.get("exception"))

    def report(self, exc: BaseException | None) -> None:
        """Count one failed ``accept()``; log now if no line went out in the last interval."""
        self.error = type(exc).__name__ if exc is not None else "OSError"
        if isinstance(exc, OSError) and exc.strerror:
            self.error = exc.strerror
        self.pending += 1
        if self._timer is None:
            self._emit()
            self._timer = self.loop.call_later(self.interval_secs, self._tick)

    def _tick(self) -> None:
        if self.pending:
            self._emit()
            self._timer = self.loop.call_later(self.interval_secs, self._tick)
        else:
            self._timer = None

    def _emit(self) -> None:
        log.warning(
            "accept() failed; new connections wait",
            extra={"failures": self.pending, "error": self.error},
        )
        self.pending = 0


class _Slot:
    """One accepted connection's place under the cap, given back exactly once."""

    __slots__ = ("listener", "released")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.released = False
        listener.open_connections += 1

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.listener.open_connections -= 1


class _Handler(RequestHandler):
    """aiohttp's connection protocol, holding a slot under the cap, with safe error answers."""

    def __init__(self, listener: Listener, slot: _Slot, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._listener = listener
        self._slot = slot
        self.made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._slot.release()
        super().connection_lost(exc)

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse or serve, without the request's bytes.

        ``message`` (aiohttp's text/plain body) quotes the offending request line or header, so it
        is dropped; the log line goes through :data:`protocol_log`, whose filter strips it too.
        """
        self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        resp = self._listener.render_error(status, _SUMMARIES.get(status, "request failed"))
        resp.force_close()
        return resp


_share_ports = False


def share_listening_ports() -> None:
    """From now on every :class:`Listener` binds with ``SO_REUSEPORT``.

    Called once at start in a ``run --workers`` worker: the workers listen on one intake port
    and the kernel spreads new connections over them (gateway/workers.py).
    """
    global _share_ports
    _share_ports = True


ACCEPT_RETRY_SECS = 1.0
"""After ``accept()`` ran out of descriptors: how long the listening socket is left alone."""


class Listener:
    """Serves ``app`` on ``host:port`` holding at most ``max_connections`` connections.

    It accepts connections itself rather than through ``loop.create_server``: asyncio accepts up
    to the backlog in one go and only later asks the protocol factory, so a burst could take every
    descriptor before any over-cap connection was closed.  Here a connection over the cap is
    answered 503 and closed within the same ``accept()`` loop, so the process never holds more
    than the cap (plus the one being refused).

    ``handler_args`` are aiohttp's per-connection settings (``keepalive_timeout``,
    ``max_line_size``, ...), as ``web.AppRunner`` takes them.
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        max_connections: int,
        render_error: ErrorRenderer,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
        on_refused: Callable[[], None] | None = None,
        **handler_args: Any,
    ) -> None:
        self.app = app
        self.host = host
        self._port = port
        self.max_connections = max_connections
        self.render_error = render_error
        self.ssl_context = ssl_context
        self.backlog = backlog
        self.on_refused = on_refused
        self.handler_args = {"access_log": None, "logger": protocol_log, **handler_args}
        self.open_connections = 0
        self._runner: web.AppRunner | None = None
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._limiter: AcceptErrorLimiter | None = None

    @property
    def port(self) -> int:
        """The port listened on (``port`` may have been 0: any free port)."""
        if self._sockets:
            return int(self._sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._limiter = AcceptErrorLimiter.install(loop)
        self._runner = web.AppRunner(self.app, handle_signals=False, **self.handler_args)
        await self._runner.setup()
        self._sockets = _bind(self.host, self._port, self.backlog, reuse_port=_share_ports)
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    async def swap_app(self, app: web.Application) -> web.AppRunner | None:
        """Serve the connections accepted from now on with ``app``, on the same listening sockets
        (a configuration reload: the port never closes).  Returns the previous runner: its
        connections are served by the previous app until the caller cleans it up (which closes
        idle ones at once and busy ones once answered)."""
        runner = web.AppRunner(app, handle_signals=False, **self.handler_args)
        await runner.setup()
        old, self._runner = self._runner, runner
        return old

    async def stop(self) -> None:
        """Stop listening, then close the connections (idle ones at once, busy ones after their answer)."""
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _watch(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.backlog):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # Out of descriptors or memory, mostly (the cap is there so that it does not happen).
                assert self._limiter is not None
                self._limiter.report(exc)
                # Linux keeps reporting the socket readable: leave it alone for a moment.
                loop.remove_reader(sock.fileno())
                loop.call_later(ACCEPT_RETRY_SECS, self._watch, sock)
                return
            conn.setblocking(False)
            if self.open_connections >= self.max_connections:
                self._refuse(conn)
                continue
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        """Hand an accepted connection to aiohttp (after the TLS handshake, if any)."""
        loop = asyncio.get_running_loop()
        assert self._runner is not None and self._runner.server is not None
        server, args = self._runner.server, self.handler_args
        slot = _Slot(self)
        handlers: list[_Handler] = []

        def protocol() -> _Handler:
            handlers.append(_Handler(self, slot, server, loop=loop, **args))
            return handlers[0]

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is None:
                return
            # A failed TLS handshake, or shutdown (possibly before the task ever ran): a transport
            # owns the socket once the protocol exists; the slot is the handler's once it was made.
            if not handlers:
                conn.close()
            if not (handlers and handlers[0].made):
                slot.release()
            if not task.cancelled():
                log.debug("connection set-up failed", extra={"error": type(task.exception()).__name__})

        task = loop.create_task(loop.connect_accepted_socket(protocol, conn, ssl=self.ssl_context))
        self._tasks.add(task)
        task.add_done_callback(done)

    def _refuse(self, conn: socket.socket) -> None:
        """A connection over the cap: a 503 written as it is accepted, then closed."""
        # What the client already sent is read first, so the close is a FIN, not a reset that
        # could discard the answer before the client reads it.  (A TLS client gets no answer.)
        with contextlib.suppress(OSError):
            conn.recv(65536)
        if self.ssl_context is None:
            with contextlib.suppress(OSError):
                conn.send(self._serialize(self.render_error(503, _SUMMARIES[503]), retry_after_secs=1))
        conn.close()
        if self.on_refused is not None:
            self.on_refused()

    @staticmethod
    def _serialize(resp: web.Response, *, retry_after_secs: int) -> bytes:
        body = resp.body if isinstance(resp.body, bytes) else b""
        head = [f"HTTP/1.1 {resp.status} {resp.reason}", f"Content-Type: {resp.content_type}"]
        head += [f"{k}: {v}" for k, v in resp.headers.items() if k.lower() not in ("content-type", "content-length")]
        head += [f"Retry-After: {retry_after_secs}", f"Content-Length: {len(body)}", "Connection: close"]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _bind(host: str, port: int, backlog: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to, as ``loop.create_server`` binds them.

    ``reuse_port``: with ``SO_REUSEPORT``, so that other processes can listen on the same port.
    """
    socks: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, type_, proto, _name, addr in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks
