"""The admin listener: /metrics, /healthz (alive), /readyz (able to deliver), /status (figures as JSON)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.httpserver import ADMIN_MAX_CONNECTIONS, Listener
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.redact import redact
from gateway.telemetry.tap import STAGES, TAP, Watcher

ReadinessCheck = Callable[[], Awaitable[list[str]]]
StatusReport = Callable[[], Awaitable[dict[str, Any]]]


class AdminServer:
    """Serves metrics and probes.  ``readiness`` returns the reasons for not being ready."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        readiness: ReadinessCheck,
        status: StatusReport | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.metrics = metrics
        self.readiness = readiness
        self.status = status
        self.app = web.Application()
        self.app.add_routes(
            [web.get("/metrics", self._metrics), web.get("/healthz", self._healthz), web.get("/readyz", self._readyz)]
        )
        if status is not None:
            self.app.add_routes([web.get("/status", self._status)])
        self.app.add_routes([web.get("/tap", self._tap)])
        self._listener: Listener | None = None
        self.draining = False

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        reasons = ["draining"] if self.draining else await self.readiness()
        if reasons:
            # Reasons carry statuses and error codes only; the mask is the net under that rule.
            return web.json_response({"status": "not ready", "reasons": [redact(r) for r in reasons]}, status=503)
        return web.json_response({"status": "ready"})

    async def _status(self, _request: web.Request) -> web.Response:
        assert self.status is not None
        report = await self.status()
        if self.draining:
            report["status"] = "draining"
        # Figures and names only; the mask is the net, as for /readyz.
        return web.Response(body=redact(orjson.dumps(report).decode()), content_type="application/json")

    async def _tap(self, request: web.Request) -> web.StreamResponse:
        """``GET /tap?source=&destination=&stage=&limit=``: events as JSON lines while they pass."""
        q = request.query
        stage = q.get("stage")
        if stage is not None and stage not in STAGES:
            return self._render_error(400, f"stage: one of {', '.join(STAGES)}")
        try:
            limit = int(q["limit"]) if "limit" in q else None
        except ValueError:
            return self._render_error(400, "limit: a whole number")
        if self.draining:
            return self._render_error(503, "draining")
        watcher = TAP.watch(Watcher(q.get("source"), q.get("destination"), stage))
        try:
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            sent = 0
            while limit is None or sent < limit:
                line = await watcher.queue.get()
                if line is None:
                    break
                await resp.write(line)
                sent += 1
            await resp.write_eof()
            return resp
        finally:
            TAP.unwatch(watcher)

    @property
    def port(self) -> int:
        return self._listener.port if self._listener is not None else self._port

    @staticmethod
    def _render_error(http_status: int, summary: str) -> web.Response:
        return web.json_response({"status": "error", "summary": summary}, status=http_status)

    def _on_refused(self) -> None:
        self.metrics.connections_refused.labels("admin", "max_connections").inc()

    async def start(self) -> None:
        # Its own small cap: a flood on the admin port cannot take the descriptors intake needs,
        # and the intake cap leaves room for this one (httpserver.FD_RESERVE).
        self._listener = Listener(
            self.app,
            self.host,
            self._port,
            max_connections=ADMIN_MAX_CONNECTIONS,
            render_error=self._render_error,
            on_refused=self._on_refused,
        )
        await self._listener.start()

    async def stop(self) -> None:
        TAP.end_all()  # a tap stream never ends by itself: end it, or the listener waits on it
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
