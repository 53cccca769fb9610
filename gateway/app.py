"""Builds the pipeline from the configuration and runs it.

Start order is sinks → destinations → sources (so nothing is accepted that cannot be sent);
stop order is sources (stop accepting) → destinations (flush until the deadline) →
sources (answer, commit) → sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from gateway import version
from gateway.buffer.base import Buffer
from gateway.buffer.memory import MemoryBuffer
from gateway.config import (
    DestinationConfig,
    GatewayConfig,
    load_config,
)
from gateway.dedup import DedupWindow
from gateway.delivery.driver import DeliveryDriver
from gateway.destinations import build_schema, build_signer
from gateway.errors import ConfigError, GatewayError, StartupError, os_reason
from gateway.pipeline import Destination, target
from gateway.preflight import (
    Placement,
    RunOptions,
    exposure_problems,
    is_loopback,
    placement,
    preflight,
    raise_problems,
    split_listen,
)
from gateway.sinks.deadletter.base import DeadLetterStore
from gateway.sinks.deadletter.local import LocalDeadLetterStore
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sinks.pangea.sink import PangeaSink
from gateway.sources.kafka.config import KafkaSourceConfig
from gateway.sources.poll.config import PollSourceConfig
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.sources.webhook.source import WebhookServer, WebhookSource
from gateway.telemetry.logging import set_level
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.redact import register_config
from gateway.telemetry.stats import figures
from gateway.telemetry.tap import TAP

__all__ = ["Gateway", "Placement", "RunOptions", "is_loopback", "placement", "split_listen"]

log = logging.getLogger(__name__)


async def listening(host: str, port: int, start: Callable[[], Awaitable[None]]) -> None:
    """Run ``start`` (which binds ``host:port``); a failure becomes one StartupError line.

    Only a failure of the bind itself says "cannot listen": ``start`` may open files first (the
    embedded local audit log opens its database, which another process may hold locked), and
    naming the port for those would send the operator to the wrong place."""
    try:
        await start()
    except OSError as exc:
        if exc.filename:
            raise StartupError(f"{exc.filename}: {os_reason(exc)}") from None
        if exc.errno == errno.EBUSY and exc.strerror:  # a file in use, said in the raiser's words
            raise StartupError(exc.strerror) from None
        raise StartupError(f"cannot listen on {host}:{port}: {os_reason(exc)}") from None


async def _no_upstream_schema() -> Any:
    # The configuration refuses `schema: upstream` for a destination with a sink of its own.
    raise ConfigError("schema: upstream needs the audit log upstream, not a Kafka sink")


access_log_lines = logging.getLogger("gateway.access")


@web.middleware
async def access_log(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """``access_log: true``: one line per intake request.  The path only: a query may carry a token."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        access_log_lines.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                "remote": request.remote,
                "bytes_in": request.content_length,
            },
        )


_RESTART_ONLY = (
    "listen",
    "admin_listen",
    "data_dir",
    "local_audit",
    "intake",
    "buffer",
    "dedup",
    "deadletter",
    "stats_interval_secs",
)
"""Settings of the process, not of the pipeline: a reload that changes one is refused."""


class Gateway:
    """The running gateway: embedded local audit log (optional), destinations, sources, admin."""

    def __init__(
        self, config: GatewayConfig, options: RunOptions | None = None, metrics: Metrics | None = None
    ) -> None:
        opts = options or RunOptions()
        self.config = config
        self.metrics = metrics or Metrics()
        place = placement(config, opts)
        self.listen = place.listen
        self.admin_listen = place.admin_listen
        self.local_audit_listen = place.local_audit_listen
        self.data_dir = place.data_dir
        self.destinations: dict[str, Destination] = {}
        self.webhook: WebhookServer | None = None
        self.kafka_sources: list[Any] = []
        self.poll_sources: list[Any] = []
        self.admin: Any = None
        self.local_audit: Any = None
        self.deadletters: DeadLetterStore | None = None
        self.dedup: DedupWindow | None = None
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._refreshers: dict[str, asyncio.Task[None]] = {}
        self._reload_lock = asyncio.Lock()
        self._closing = False
        self._config_path = opts.config_path
        self._options = opts
        self.upstream: UpstreamConfig | None = None
        self._started_at = time.monotonic()
        exposed = exposure_problems(config, self.listen[0])
        if exposed:
            raise exposed[0]

    async def _upstream(self) -> UpstreamConfig:
        if self.config.upstream is not None:
            return self.config.upstream
        if self._options.upstream is not None:
            return self._options.upstream
        return await self.embedded_upstream()

    async def embedded_upstream(self) -> UpstreamConfig:
        """Start the embedded local audit log (:attr:`local_audit`; the caller stops it); its URL and token."""
        from gateway.local_audit.server import LocalAuditServer
        from gateway.local_audit.settings import LocalAuditSettings

        host, port = self.local_audit_listen
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings = LocalAuditSettings(listen_host=host, listen_port=port, db_path=self.data_dir / "local-audit.db")
        self.local_audit = LocalAuditServer(settings)
        await listening(host, port, self.local_audit.start)
        log.info("embedded local audit log started", extra={"url": self.local_audit.base_url})
        return UpstreamConfig(url=self.local_audit.base_url, token=SecretStr(self.local_audit.token))

    def _buffer(self, name: str) -> Buffer:
        b = self.config.buffer
        if b.type == "memory":
            return MemoryBuffer(name, b.max_events, b.max_bytes, self.metrics)
        if b.type == "kafka":
            from gateway.buffer.kafka import KafkaBuffer

            kafka_sources = [n for n, s in self.config.sources.items() if isinstance(s, KafkaSourceConfig)]
            return KafkaBuffer(name, b, self.metrics, local_sources=kafka_sources)
        from gateway.buffer.disk import DiskBuffer

        root = b.path or self.data_dir / "spool"
        if b.path is not None and self._options.worker is not None:
            root = root / f"worker-{self._options.worker}"  # workers never share a spool (data_dir is theirs)
        path = root / name
        return DiskBuffer(name, path, b, self.metrics)

    async def _refresh_schema(self, dest: Destination, sink: PangeaSink, wake: asyncio.Event) -> None:
        """Keep an upstream-fetched schema current: on an interval, and at once on InvalidSchema."""
        policy = dest.config.schema_policy
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), policy.refresh_interval_secs)
            wake.clear()
            try:
                dest.schema = await build_schema(dest.config, sink.fetch_schema)
                log.info("schema refreshed", extra={"destination": dest.name})
            except (GatewayError, ValueError) as exc:
                log.warning(
                    "schema refresh failed; keeping the last one", extra={"destination": dest.name, "error": str(exc)}
                )

    async def start(self) -> None:
        from gateway.admin import AdminServer

        TAP.configure(self.config.tap.redact_fields)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        upstream = await self._upstream()
        dl = self.config.deadletter
        local_dl = LocalDeadLetterStore(dl.local_path(self.data_dir), self.metrics)
        if dl.type == "kafka":
            from gateway.sinks.deadletter.kafka import KafkaDeadLetterStore

            kafka_dl = KafkaDeadLetterStore(dl, local_dl, self.metrics)
            await kafka_dl.start()
            self.deadletters = kafka_dl
        else:
            self.deadletters = local_dl
        if self.config.dedup.enabled:
            self.dedup = DedupWindow(self.data_dir / "dedup.db", self.config.dedup, self.metrics)
            await self.dedup.start()
        self.upstream = upstream
        for name, dc in self.config.destinations.items():
            self.destinations[name] = await self._start_destination(name, dc)
        hooks = self._webhook_sources(self.config, self.destinations)
        if hooks:
            self.webhook = self._webhook_server(self.config, hooks)
            await listening(*self.listen, self.webhook.start)
        for n, s in self.config.sources.items():
            if isinstance(s, KafkaSourceConfig | PollSourceConfig):
                await self._start_pulling(n, s, self.destinations)

        host, port = self.admin_listen
        self.admin = AdminServer(host, port, self.metrics, self.readiness, self.status)
        await listening(host, port, self.admin.start)
        if self._options.watch_config and self._config_path is not None:
            self._tasks.append(
                asyncio.create_task(self._watch_config(self._config_path, self._options.watch_interval_secs))
            )
        if self.config.stats_interval_secs > 0:
            self._tasks.append(asyncio.create_task(self._log_stats(self.config.stats_interval_secs)))
        log.info(
            "gateway started",
            extra={
                "intake": f"{self.listen[0]}:{self.intake_port}" if self.webhook else None,
                "admin": f"{self.admin_listen[0]}:{self.admin.port}",
                "destinations": sorted(self.destinations),
                "sources": sorted(self.config.sources),
            },
        )

    async def _start_destination(self, name: str, dc: DestinationConfig) -> Destination:
        """A destination's sink (started), schema, buffer; its schema refresh task when fetched upstream."""
        assert self.upstream is not None and self.deadletters is not None
        upstream = self.upstream
        if dc.sink is not None:  # a sink of its own (Kafka), not the audit log upstream
            from gateway.sinks.kafka.sink import KafkaSink

            kafka_sink = KafkaSink(name, dc.sink)
            await kafka_sink.start()
            dest = Destination(
                name,
                dc,
                self._buffer(name),
                DeliveryDriver(
                    kafka_sink,
                    dc.sink.retry,
                    self.metrics,
                    self.deadletters,
                    requeues_errored=self.config.buffer.type == "disk",
                ),
                await build_schema(dc, _no_upstream_schema),
                self.metrics,
                dc.sink.max_in_flight,
                build_signer(dc),
                keeps_undelivered=self.config.buffer.type == "disk",
            )
            dest.start()
            return dest
        refresh = asyncio.Event()
        sink = PangeaSink(name, dc.config_id, upstream, self.metrics, self.deadletters, on_invalid_schema=refresh.set)
        await sink.start()
        try:
            schema = await build_schema(dc, sink.fetch_schema)
        except BaseException:
            await sink.stop()
            raise
        dest = Destination(
            name,
            dc,
            self._buffer(name),
            DeliveryDriver(
                sink,
                upstream.retry,
                self.metrics,
                self.deadletters,
                poll=upstream.poll,
                requeues_errored=self.config.buffer.type == "disk",
            ),
            schema,
            self.metrics,
            upstream.max_in_flight,
            build_signer(dc),
            keeps_undelivered=self.config.buffer.type == "disk",
        )
        dest.start()
        if dc.schema_ == "upstream":
            self._refreshers[name] = asyncio.create_task(self._refresh_schema(dest, sink, refresh))
        return dest

    async def _stop_destination(self, dest: Destination, deadline: float) -> None:
        """Flush ``dest`` until ``deadline`` (every ack resolved), then close its sink and buffer."""
        task = self._refreshers.pop(dest.name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await dest.stop(deadline)
        await dest.sink.stop()
        aclose = getattr(dest.buffer, "aclose", None)  # disk: close the file; kafka: stop the producer
        if aclose is not None:
            await aclose()

    def _webhook_sources(self, config: GatewayConfig, destinations: dict[str, Destination]) -> list[WebhookSource]:
        return [
            WebhookSource(n, s, destinations, self.metrics, self.deadletters, dedup=self.dedup, upstream=self.upstream)  # type: ignore[arg-type]
            for n, s in config.sources.items()
            if isinstance(s, WebhookSourceConfig)
        ]

    def _webhook_server(self, config: GatewayConfig, hooks: list[WebhookSource]) -> WebhookServer:
        host, port = self.listen
        max_body = max([h.config.max_body_bytes for h in hooks] + [1024**2])
        server = WebhookServer(host, port, hooks, client_max_size=max_body, settings=config.intake)
        if config.access_log:
            # outermost: it sees the status the source's own middleware answered with
            server.app.middlewares.insert(0, access_log)
        return server

    async def _start_pulling(
        self, name: str, src: KafkaSourceConfig | PollSourceConfig, destinations: dict[str, Destination]
    ) -> None:
        """Start a Kafka or pull source feeding its destinations (one, or a fan-out of several)."""
        assert self.deadletters is not None
        if isinstance(src, KafkaSourceConfig):
            from gateway.sources.kafka.source import KafkaSource

            ks = KafkaSource(name, src, target(src.targets, destinations), self.metrics, self.deadletters)
            await ks.start()
            self.kafka_sources.append(ks)
            return
        if self._options.worker not in (None, 0):
            # Pull sources run in one worker only (worker 0) under `run --workers`, at start and
            # on reload alike: two pollers of one cursor would read every page twice.
            return
        from gateway.sources.intake import Admitter
        from gateway.sources.poll.source import PollSource

        admitter = Admitter(name, target(src.targets, destinations), self.metrics, self.deadletters, None, self.dedup)
        ps = PollSource(name, src, admitter, self.data_dir)
        await ps.start()
        self.poll_sources.append(ps)

    # -- reload --------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: read the configuration file again and switch to it (see :meth:`reload_from_file`)."""

        async def reload() -> None:
            await self.reload_from_file()

        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.create_task(reload()))

    async def reload_from_file(self) -> bool:
        """Load, check and apply the configuration file; a bad one is refused with one log line
        naming the key path, and the running configuration stays.  True when applied."""
        if self._config_path is None:
            log.warning("configuration reload: running the built-in default, no file to read")
            return False
        try:
            config = load_config(self._config_path)
            raise_problems(preflight(config, self._options))
        except GatewayError as exc:
            self.metrics.config_reloads.labels("refused").inc()
            log.error("configuration reload refused; the running configuration stays", extra={"error": str(exc)})
            return False
        return await self.reload(config)

    async def reload(self, config: GatewayConfig) -> bool:
        """Switch to ``config`` without closing a listening port or losing an acknowledged event.

        The new destinations are built beside the running ones (a destination whose settings and
        upstream did not change is kept as it is, with its buffer); the intake listener hands
        new connections to the new routes while the old ones finish their requests; Kafka and
        pull sources that did not change keep running, the others stop (committing what was
        delivered) before their replacements start; destinations no longer wanted drain.
        Settings of the process itself (listeners, data directory, buffer, dedup, dead letters)
        change only on restart: such a configuration is refused.
        """
        async with self._reload_lock:
            if self._stopping.is_set() or self._closing:
                return False
            old = self.config
            fixed = [k for k in _RESTART_ONLY if getattr(config, k) != getattr(old, k)]
            if fixed:
                self.metrics.config_reloads.labels("refused").inc()
                log.error(
                    "configuration reload refused; the running configuration stays",
                    extra={"error": f"{', '.join(fixed)}: changes only on restart"},
                )
                return False
            same_upstream = config.upstream == old.upstream
            kept = {
                n: d
                for n, d in self.destinations.items()
                if same_upstream and n in config.destinations and config.destinations[n] == old.destinations[n]
            }
            rebuilt = sorted(n for n in config.destinations if n in self.destinations and n not in kept)
            if rebuilt and config.buffer.type != "memory":
                # Its spool (or topic) is the old one's: two buffers cannot own it at once.
                self.metrics.config_reloads.labels("refused").inc()
                log.error(
                    "configuration reload refused; the running configuration stays",
                    extra={
                        "error": f"destinations.{rebuilt[0]}: a destination on a {config.buffer.type} buffer"
                        " (or its upstream) changes only on restart"
                    },
                )
                return False
            register_config(config)
            destinations: dict[str, Destination] = dict(kept)
            loop = asyncio.get_running_loop()
            try:
                for n, dc in config.destinations.items():
                    if n not in destinations:
                        destinations[n] = await self._start_destination(n, dc)
                hooks = self._webhook_sources(config, destinations)
                server = self._webhook_server(config, hooks) if hooks or self.webhook is not None else None
                old_runner = None
                if server is not None and self.webhook is not None:
                    old_runner = await server.take_over(self.webhook)
                elif server is not None:
                    await listening(*self.listen, server.start)
            except BaseException as exc:
                for n, d in destinations.items():
                    if n not in kept:
                        await self._stop_destination(d, loop.time())
                self.metrics.config_reloads.labels("failed").inc()
                log.error(
                    "configuration reload failed; the running configuration stays",
                    extra={"error": str(exc) if isinstance(exc, GatewayError) else type(exc).__name__},
                )
                if not isinstance(exc, Exception):
                    raise
                return False
            # From here on new requests reach the new routes.
            retired = [d for n, d in self.destinations.items() if kept.get(n) is not d]
            old_pull = [
                p
                for p in [*self.kafka_sources, *self.poll_sources]
                if config.sources.get(p.name) != old.sources.get(p.name) or p.config.destination not in kept
            ]
            self.kafka_sources = [p for p in self.kafka_sources if p not in old_pull]
            self.poll_sources = [p for p in self.poll_sources if p not in old_pull]
            self.config, self.destinations, self.webhook = config, destinations, server
            TAP.configure(config.tap.redact_fields)
            deadline = loop.time() + config.shutdown_timeout_secs
            for p in old_pull:
                await p.stop_accepting()
            # Every event the old generation took is delivered (or resolved) before it goes.
            await asyncio.gather(*(self._stop_destination(d, deadline) for d in retired))
            if old_runner is not None:
                # Idle keep-alive connections close now, busy ones once answered (acks resolved).
                await old_runner.cleanup()
            for p in old_pull:
                await p.stop(loop.time() + 5.0)
            running = {p.name for p in [*self.kafka_sources, *self.poll_sources]}
            for n, s in config.sources.items():
                if isinstance(s, KafkaSourceConfig | PollSourceConfig) and n not in running:
                    await self._start_pulling(n, s, destinations)
            if self._options.log_level is None:  # run --log-level wins over the file, reloaded or not
                set_level(config.log_level)  # before the line below, so it shows at the new level
            self.metrics.config_reloads.labels("ok").inc()
            log.info(
                "configuration reloaded",
                extra={
                    "destinations": sorted(destinations),
                    "sources": sorted(config.sources),
                    "kept_destinations": sorted(kept),
                },
            )
            return True

    async def _watch_config(self, path: Path, interval_secs: float) -> None:
        """``run --watch-config``: reload when the file's content changes."""

        def digest() -> bytes | None:
            try:
                return hashlib.sha256(path.read_bytes()).digest()
            except OSError:
                return None

        seen = digest()
        while True:
            await asyncio.sleep(interval_secs)
            now = digest()
            if now is not None and now != seen:
                seen = now
                await self.reload_from_file()

    async def status(self) -> dict[str, Any]:
        """``GET /status``: readiness, and the stats line's figures with each destination's upstream
        health and buffer use."""
        reasons = await self.readiness()
        report = figures(self.metrics.registry, list(self.config.sources), list(self.destinations))
        for name, row in report["destinations"].items():
            dest = self.destinations[name]
            row["upstream"] = await dest.sink.check() or "ok"
            row["buffer_use"] = round(dest.buffer.fill_ratio, 4)
        return {
            "status": "not ready" if reasons else "ready",
            "reasons": reasons,
            "version": version(),
            "uptime_secs": round(time.monotonic() - self._started_at, 1),
            "taps": TAP.watching,
            **report,
        }

    async def _log_stats(self, interval_secs: float) -> None:
        """The periodic stats line: totals since start, per source and destination."""
        while True:
            await asyncio.sleep(interval_secs)
            report = figures(self.metrics.registry, list(self.config.sources), list(self.destinations))
            for name, row in report["destinations"].items():
                row["buffer_use"] = round(self.destinations[name].buffer.fill_ratio, 4)
            log.info("stats", extra=report)

    @property
    def intake_port(self) -> int:
        return self.webhook.port if self.webhook else 0

    async def readiness(self) -> list[str]:
        reasons: list[str] = []
        for name, dest in self.destinations.items():
            why = await dest.sink.check()
            if why:
                reasons.append(f"{name}: {why}")
            if dest.buffer.fill_ratio >= 1.0:
                reasons.append(f"{name}: buffer full")
            refusal = getattr(dest.buffer, "refusal", None)  # disk: intake refuses everything (disk full)
            if refusal:
                reasons.append(f"{name}: {refusal}")
        for ks in self.kafka_sources:
            if ks.consumer is None:
                reasons.append(f"{ks.name}: not connected to Kafka")
        for ps in self.poll_sources:
            why = ps.readiness()
            if why:
                reasons.append(f"{ps.name}: {why}")
        return reasons

    def request_stop(self) -> None:
        self._stopping.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        await self._stopping.wait()
        log.info("shutdown requested; draining", extra={"timeout_secs": self.config.shutdown_timeout_secs})
        await self.stop()

    async def stop(self) -> None:
        """Drain and close everything (once; a second call returns at once)."""
        if self._closing:
            return
        self._closing = True  # no reload starts from now on
        async with self._reload_lock:  # and none is half done
            await self._stop()

    async def _stop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout_secs
        if self.admin is not None:
            self.admin.draining = True
        tasks = [*self._tasks, *self._refreshers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.webhook is not None:
            await self.webhook.stop_accepting()
        for ks in self.kafka_sources:
            await ks.stop_accepting()
        for ps in self.poll_sources:
            await ps.stop_accepting()
        await asyncio.gather(*(d.stop(deadline) for d in self.destinations.values()))
        if self.webhook is not None:
            # Answers still waiting on acks get theirs now that every ack is resolved.
            await self.webhook.wait_idle(loop.time() + 2.0)
            await self.webhook.stop()
        for ks in self.kafka_sources:
            await ks.stop(loop.time() + 5.0)
        for ps in self.poll_sources:
            await ps.stop(loop.time() + 5.0)
        for d in self.destinations.values():
            await d.sink.stop()
            aclose = getattr(d.buffer, "aclose", None)  # disk: close the file; kafka: stop the producer
            if aclose is not None:
                await aclose()
        if self.dedup is not None:
            await self.dedup.close()
        if self.deadletters is not None:
            await self.deadletters.close()
        if self.local_audit is not None:
            await self.local_audit.stop()
        if self.admin is not None:
            await self.admin.stop()
        log.info("gateway stopped")
