"""The HTTP intake server: every webhook source's routes on one aiohttp listener."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.deadlines import deadlines
from gateway.dedup import DedupWindow
from gateway.httpserver import Listener, connection_budget
from gateway.normalize import restrictions
from gateway.pipeline import Destination, target
from gateway.sinks.deadletter.base import DeadLetterStore
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sources.intake import Admitter
from gateway.sources.webhook.body import BODY_TIMEOUT_SECS
from gateway.sources.webhook.callers import Callers
from gateway.sources.webhook.config import IntakeServerConfig, WebhookSourceConfig
from gateway.sources.webhook.envelope import envelope
from gateway.sources.webhook.hec_routes import HecRoute
from gateway.sources.webhook.pangea_api import PangeaApi
from gateway.sources.webhook.ratelimit import TokenBucket
from gateway.sources.webhook.read_proxy import ReadProxy
from gateway.sources.webhook.vendor_routes import VendorRoute
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebhookSource:
    """One configured webhook source (a route or, for ``format: pangea``, a set of routes)."""

    def __init__(
        self,
        name: str,
        config: WebhookSourceConfig,
        destinations: dict[str, Destination],
        metrics: Metrics,
        deadletters: DeadLetterStore,
        dedup: DedupWindow | None = None,
        upstream: UpstreamConfig | None = None,
    ) -> None:
        """``upstream``: where a ``format: pangea`` source sends the Audit API's read calls."""
        self.name = name
        self.config = config
        self.metrics = metrics
        dest = target(config.targets, destinations)
        check = restrictions.checker(config.restrictions)
        admitter = Admitter(name, dest, metrics, deadletters, check, dedup)
        self.handler: PangeaApi | VendorRoute | HecRoute
        if config.format == "pangea":
            by_id = {
                d.config.config_id: Admitter(name, d, metrics, deadletters, check, dedup)
                for d in destinations.values()
                if d.config.config_id
            }
            proxy = ReadProxy(upstream, metrics) if upstream is not None else None
            callers = None
            if config.callers is not None:

                def caller_admitter(dest_name: str, limits: dict[str, list[str]] | None) -> Admitter:
                    # A caller's own restrictions, else the source's.
                    own = restrictions.checker(limits) if limits is not None else check
                    return Admitter(name, destinations[dest_name], metrics, deadletters, own, dedup)

                callers = Callers(config.callers, caller_admitter, metrics)
            self.handler = PangeaApi(name, config, admitter, by_id, proxy, callers)
        elif config.format == "splunk_hec":
            self.handler = HecRoute(name, config, admitter)
        else:
            self.handler = VendorRoute(name, config, admitter)
        self.bucket = (
            TokenBucket(config.rate_limit_per_sec, config.rate_limit_burst) if config.rate_limit_per_sec else None
        )

    def routes(self) -> list[web.RouteDef]:
        routes = self.handler.routes()
        if self.bucket is None:
            return routes
        return [web.route(r.method, r.path, self._limited(r.handler), **r.kwargs) for r in routes]

    def _limited(self, handler: Handler) -> Handler:
        bucket = self.bucket
        assert bucket is not None

        async def limited(request: web.Request) -> web.StreamResponse:
            wait = bucket.take()
            if wait:
                self.metrics.requests_refused.labels(self.name, "rate_limited").inc()
                retry = TokenBucket.retry_after_header(wait)
                if self.config.format == "splunk_hec":
                    return web.json_response(
                        {"text": "Server is busy", "code": 9}, status=429, headers={"Retry-After": retry}
                    )
                return envelope(429, "TooManyRequests", "rate limit exceeded", None, headers={"Retry-After": retry})
            return await handler(request)

        return limited


class WebhookServer:
    """Serves all webhook sources; stops accepting first, then waits for in-flight answers."""

    def __init__(
        self,
        host: str,
        port: int,
        sources: list[WebhookSource],
        client_max_size: int,
        settings: IntakeServerConfig | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.settings = settings or IntakeServerConfig()
        self.sources = sources
        # Every source holds the gateway's one Metrics.
        self.metrics = sources[0].metrics if sources else Metrics()
        self._accepting = True
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.app = web.Application(middlewares=[self._middleware], client_max_size=client_max_size)
        self.app[BODY_TIMEOUT_SECS] = self.settings.body_timeout_secs
        # The outer cap only catches what the routes' own limits (body timeout, then the ack
        # wait answered 503) somehow miss.
        self._cap_secs = self.settings.body_timeout_secs + max([s.config.ack_timeout_secs for s in sources] + [0]) + 30
        for s in sources:
            self.app.add_routes(s.routes())
        self._listener: Listener | None = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._accepting:
            return envelope(503, "ServiceNotAvailable", "shutting down", None, headers={"Retry-After": "5"})
        self._inflight += 1
        self._idle.clear()
        task = asyncio.current_task()
        # The cap is a deadline on a queue shared by every request (one loop timer for all):
        # a timer per request cost ~5 us (issue 18).  It cancels the handler; the cancellation
        # is told apart from any other (a shutdown) by the deadline having fired.
        cap = deadlines(self._cap_secs).add(_cancel, task)
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if not cap.fired or task is None or task.uncancel() > 0:
                raise
            return envelope(408, "ValidationError", "request took too long", None)
        except web.HTTPException as exc:
            # aiohttp's own 404/405/413 answers, in the same envelope as every other answer.
            status = {404: "NotFound", 405: "ValidationError", 413: "ValidationError"}.get(
                exc.status, "ValidationError"
            )
            return envelope(exc.status, status, exc.reason, None)
        except TimeoutError:
            return envelope(408, "ValidationError", "request took too long", None)
        except Exception:
            # Never a stack trace in an answer; the log has it.
            log.exception("unhandled error in a webhook handler")
            return envelope(500, "InternalError", "internal error", None)
        finally:
            cap.cancel()
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    @property
    def port(self) -> int:
        return self._listener.port if self._listener is not None else self._port

    def _render_error(self, http_status: int, summary: str) -> web.Response:
        """The listener's own answers (malformed HTTP, over the connection cap), enveloped.

        The route is unknown when a request cannot be parsed, so HEC routes get the envelope too.
        """
        status = {400: "ValidationError", 503: "ServiceNotAvailable", 504: "ServiceNotAvailable"}
        return envelope(http_status, status.get(http_status, "InternalError"), summary, None)

    async def start(self) -> None:
        st = self.settings
        ssl_context = None
        if st.tls is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(st.tls.cert_file, st.tls.key_file)
        max_connections = connection_budget(st.max_connections)
        if max_connections < st.max_connections:
            # a warning when the operator asked for more; the default just adapts to the machine
            log.log(
                logging.WARNING if "max_connections" in st.model_fields_set else logging.INFO,
                "intake.max_connections lowered to fit the file descriptor limit",
                extra={"configured": st.max_connections, "max_connections": max_connections},
            )
        self._listener = Listener(
            self.app,
            self.host,
            self._port,
            max_connections=max_connections,
            render_error=self._render_error,
            ssl_context=ssl_context,
            backlog=1024,
            on_refused=self._on_refused,
            keepalive_timeout=st.keepalive_timeout_secs,
            max_line_size=st.max_header_bytes,
            max_field_size=st.max_header_bytes,
            # read_body decompresses within max_body_bytes and refuses truncated gzip; aiohttp's
            # own decoding would hand it inflated bytes (and accept deflate/br/zstd and cut streams).
            auto_decompress=False,
        )
        await self._listener.start()
        log.info("intake listening", extra={"listen": f"{self.host}:{self.port}", "max_connections": max_connections})

    def _on_refused(self) -> None:
        self.metrics.connections_refused.labels("intake", "max_connections").inc()

    async def take_over(self, old: WebhookServer) -> web.AppRunner | None:
        """Serve on ``old``'s listening socket from now on (a configuration reload): connections
        accepted from now on reach this server's routes.  Returns ``old``'s runner, still serving
        its connections; cleaning it up closes them once answered.  ``old`` no longer owns the
        socket: stopping it leaves the port open."""
        listener, old._listener = old._listener, None
        if listener is None:
            raise RuntimeError("the previous intake server is not listening")
        self._listener = listener
        return await listener.swap_app(self.app)

    async def stop_accepting(self) -> None:
        self._accepting = False

    async def wait_idle(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("shutdown deadline: requests still in flight", extra={"requests": self._inflight})

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        for src in self.sources:
            if isinstance(src.handler, PangeaApi):
                await src.handler.close()


def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None:
        task.cancel()
