"""Builds the pipeline from the configuration and runs it.

Start order is sinks → destinations → sources (so nothing is accepted that cannot be sent);
stop order is sources (stop accepting) → destinations (flush until the deadline) →
sources (answer, commit) → sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from gateway.buffer.base import Buffer
from gateway.buffer.memory import MemoryBuffer
from gateway.config import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    DEFAULT_LOCAL_AUDIT_LISTEN,
    GatewayConfig,
)
from gateway.dedup import DedupWindow
from gateway.delivery.driver import DeliveryDriver
from gateway.destinations import build_schema, build_signer
from gateway.errors import ConfigError, GatewayError
from gateway.pipeline import Destination, target
from gateway.sinks.deadletter.base import DeadLetterStore
from gateway.sinks.deadletter.local import LocalDeadLetterStore
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sinks.pangea.sink import PangeaSink
from gateway.sources.kafka.config import KafkaSourceConfig
from gateway.sources.poll.config import PollSourceConfig
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.sources.webhook.source import WebhookServer, WebhookSource
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"listen address {value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit ":PORT" means all interfaces


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _no_upstream_schema() -> Any:
    # The configuration refuses `schema: upstream` for a destination with a sink of its own.
    raise ConfigError("schema: upstream needs the audit log upstream, not a Kafka sink")


@dataclass(frozen=True)
class RunOptions:
    """Command-line settings; each wins over the config file's value."""

    listen: str | None = None
    admin_listen: str | None = None
    data_dir: Path | None = None
    local_audit_listen: str | None = None


class Gateway:
    """The running gateway: embedded local audit log (optional), destinations, sources, admin."""

    def __init__(
        self, config: GatewayConfig, options: RunOptions | None = None, metrics: Metrics | None = None
    ) -> None:
        opts = options or RunOptions()
        self.config = config
        self.metrics = metrics or Metrics()
        self.listen = split_listen(opts.listen or config.listen or DEFAULT_LISTEN)
        self.admin_listen = split_listen(opts.admin_listen or config.admin_listen or DEFAULT_ADMIN_LISTEN)
        self.local_audit_listen = split_listen(
            opts.local_audit_listen or config.local_audit.listen or DEFAULT_LOCAL_AUDIT_LISTEN
        )
        self.data_dir = Path(opts.data_dir or config.data_dir or DEFAULT_DATA_DIR)
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
        self._check_exposure()

    def _check_exposure(self) -> None:
        host = self.listen[0]
        if is_loopback(host):
            return
        for name, src in self.config.sources.items():
            if isinstance(src, WebhookSourceConfig) and src.auth is None:
                raise ConfigError(
                    f"listening on {host} beyond loopback requires inbound auth on every webhook source",
                    f"sources.{name}.auth",
                )

    async def _upstream(self) -> UpstreamConfig:
        if self.config.upstream is not None:
            return self.config.upstream
        from gateway.local_audit.server import LocalAuditServer
        from gateway.local_audit.settings import LocalAuditSettings

        host, port = self.local_audit_listen
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings = LocalAuditSettings(listen_host=host, listen_port=port, db_path=self.data_dir / "local-audit.db")
        self.local_audit = LocalAuditServer(settings)
        await self.local_audit.start()
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

        path = (b.path or self.data_dir / "spool") / name
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
        deadletters = self.deadletters
        if self.config.dedup.enabled:
            self.dedup = DedupWindow(self.data_dir / "dedup.db", self.config.dedup, self.metrics)
            await self.dedup.start()
        for name, dc in self.config.destinations.items():
            if dc.sink is not None:
                from gateway.sinks.kafka.sink import KafkaSink

                kafka_sink = KafkaSink(name, dc.sink)
                await kafka_sink.start()
                dest = Destination(
                    name,
                    dc,
                    self._buffer(name),
                    DeliveryDriver(kafka_sink, dc.sink.retry, self.metrics, deadletters),
                    await build_schema(dc, _no_upstream_schema),
                    self.metrics,
                    dc.sink.max_in_flight,
                    build_signer(dc),
                    keeps_undelivered=self.config.buffer.type == "disk",
                )
                dest.start()
                self.destinations[name] = dest
                continue
            refresh = asyncio.Event()
            sink = PangeaSink(name, dc.config_id, upstream, self.metrics, deadletters, on_invalid_schema=refresh.set)
            await sink.start()
            schema = await build_schema(dc, sink.fetch_schema)
            dest = Destination(
                name,
                dc,
                self._buffer(name),
                DeliveryDriver(sink, upstream.retry, self.metrics, deadletters),
                schema,
                self.metrics,
                upstream.max_in_flight,
                build_signer(dc),
                keeps_undelivered=self.config.buffer.type == "disk",
            )
            dest.start()
            self.destinations[name] = dest
            if dc.schema_ == "upstream":
                self._tasks.append(asyncio.create_task(self._refresh_schema(dest, sink, refresh)))

        hooks = [
            WebhookSource(n, s, self.destinations, self.metrics, self.deadletters, dedup=self.dedup)
            for n, s in self.config.sources.items()
            if isinstance(s, WebhookSourceConfig)
        ]
        if hooks:
            host, port = self.listen
            max_body = max(h.config.max_body_bytes for h in hooks)
            self.webhook = WebhookServer(host, port, hooks, client_max_size=max_body, settings=self.config.intake)
            await self.webhook.start()
        for n, s in self.config.sources.items():
            if isinstance(s, KafkaSourceConfig):
                from gateway.sources.kafka.source import KafkaSource

                ks = KafkaSource(n, s, target(s.targets, self.destinations), self.metrics, self.deadletters)
                await ks.start()
                self.kafka_sources.append(ks)

        for n, s in self.config.sources.items():
            if isinstance(s, PollSourceConfig):
                from gateway.sources.intake import Admitter
                from gateway.sources.poll.source import PollSource

                admitter = Admitter(
                    n, target(s.targets, self.destinations), self.metrics, self.deadletters, None, self.dedup
                )
                ps = PollSource(n, s, admitter, self.data_dir)
                await ps.start()
                self.poll_sources.append(ps)

        host, port = self.admin_listen
        self.admin = AdminServer(host, port, self.metrics, self.readiness)
        await self.admin.start()
        log.info(
            "gateway started",
            extra={
                "intake": f"{self.listen[0]}:{self.intake_port}" if self.webhook else None,
                "admin": f"{self.admin_listen[0]}:{self.admin.port}",
                "destinations": sorted(self.destinations),
                "sources": sorted(self.config.sources),
            },
        )

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
        await self._stopping.wait()
        log.info("shutdown requested; draining", extra={"timeout_secs": self.config.shutdown_timeout_secs})
        await self.stop()

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout_secs
        if self.admin is not None:
            self.admin.draining = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
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
