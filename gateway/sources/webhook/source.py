"""The HTTP intake server: every webhook source's routes on one aiohttp listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.pipeline import Destination
from gateway.sinks.deadletter.base import DeadLetterStore
from gateway.sources.intake import Admitter
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.sources.webhook.envelope import envelope
from gateway.sources.webhook.pangea_api import PangeaApi
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
    ) -> None:
        self.name = name
        self.config = config
        dest = destinations[config.destination]
        from gateway.normalize import restrictions

        check = None
        if config.restrictions:
            allowed = config.restrictions

            def check(fields: dict[str, object]) -> list[dict[str, str]]:
                return restrictions.check(fields, allowed)

        admitter = Admitter(name, dest, metrics, deadletters, check)
        self.handler: PangeaApi | VendorRoute
        if config.format == "pangea":
            by_id = {
                d.config.config_id: Admitter(name, d, metrics, deadletters, check)
                for d in destinations.values()
                if d.config.config_id
            }
            self.handler = PangeaApi(name, config, admitter, by_id)
        else:
            self.handler = VendorRoute(name, config, admitter)

    def routes(self) -> list[web.RouteDef]:
        return self.handler.routes()


class WebhookServer:
    """Serves all webhook sources; stops accepting first, then waits for in-flight answers."""

    def __init__(self, host: str, port: int, sources: list[WebhookSource], client_max_size: int) -> None:
        self.host = host
        self._port = port
        self.sources = sources
        self._accepting = True
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.app = web.Application(middlewares=[self._middleware], client_max_size=client_max_size)
        for s in sources:
            self.app.add_routes(s.routes())
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._accepting:
            return envelope(503, "ServiceNotAvailable", "shutting down", None, headers={"Retry-After": "5"})
        self._inflight += 1
        self._idle.clear()
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            # Never a stack trace in an answer; the log has it.
            log.exception("unhandled error in a webhook handler")
            return envelope(500, "InternalError", "internal error", None)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    @property
    def port(self) -> int:
        if self._site is not None and self._site._server is not None:
            sockets = getattr(self._site._server, "sockets", None)
            if sockets:
                return int(sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port, backlog=1024)
        await self._site.start()
        log.info("intake listening", extra={"listen": f"{self.host}:{self.port}"})

    async def stop_accepting(self) -> None:
        self._accepting = False

    async def wait_idle(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("shutdown deadline: requests still in flight", extra={"requests": self._inflight})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
