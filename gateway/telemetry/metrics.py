"""Every metric the gateway exports, defined once.

Names follow ``gateway_<noun>_<unit>_total`` for counters; labels stay low-cardinality
(``source``, ``destination``, ``stage``, ``reason``, ``endpoint``, ``status``, ``topic``,
``partition``).  Count per batch, not per event: ``.inc(n)``.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)

from gateway import version
from gateway.telemetry.reasons import Reason

# `*_created` series double every counter's cardinality and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client


class Account:
    """The terms of the accounting equation for one (source, destination), counted here only.

    ``received + recovered = forwarded + handed_off + duplicates + rejected + refused + dropped
    + in_flight`` holds at every moment between two awaits: each method moves ``n`` events from one term to
    another in one synchronous step, and ``in_flight`` (a gauge) holds what has no outcome yet.
    Callers count once per batch (``n``), never per event; the label children are cached.
    A fan-out source's event is one copy per destination, each accounted in its own pair.
    """

    __slots__ = ("_forwarded", "_in_flight", "_labels", "_metrics", "_received")

    def __init__(self, metrics: Metrics, source: str, destination: str) -> None:
        self._metrics = metrics
        self._labels = (source, destination)
        self._received = metrics.events_received.labels(source, destination)
        self._forwarded = metrics.events_forwarded.labels(source, destination)
        self._in_flight = metrics.events_in_flight.labels(source, destination)

    def received(self, n: int) -> None:
        """``n`` events read by the source: in flight until one of the methods below."""
        self._received.inc(n)
        self._in_flight.inc(n)

    def recovered(self, n: int) -> None:
        """``n`` events read back from a disk spool an earlier run left: in flight again."""
        self._metrics.events_recovered.labels(*self._labels).inc(n)
        self._in_flight.inc(n)

    def forwarded(self, n: int) -> None:
        """``n`` events the upstream accepted."""
        self._forwarded.inc(n)
        self._in_flight.dec(n)

    def handed_off(self, n: int) -> None:
        """``n`` events written to the shared Kafka buffer topic and acknowledged by its brokers
        (``acks=all``): done on this pair; the buffer topic's Kafka source (on this instance or
        another of its consumer group) counts them ``received`` under its own name."""
        self._metrics.events_handed_off.labels(*self._labels).inc(n)
        self._in_flight.dec(n)

    def duplicates(self, n: int) -> None:
        """``n`` events resolved delivered as duplicates of an accepted id, not sent."""
        self._metrics.duplicates.labels(*self._labels).inc(n)
        self._in_flight.dec(n)

    def rejected(self, stage: str, reason: Reason, n: int) -> None:
        """``n`` events refused for good (``stage`` intake or upstream) and dead-lettered."""
        self._metrics.events_rejected.labels(*self._labels, stage, reason.value).inc(n)
        self._in_flight.dec(n)

    def refused(self, reason: Reason, n: int) -> None:
        """``n`` events not admitted: the sender keeps them (429/503)."""
        self._metrics.events_refused.labels(*self._labels, reason.value).inc(n)
        self._in_flight.dec(n)

    def dropped(self, reason: Reason, n: int) -> None:
        """``n`` events given up on undelivered, never answered 2xx."""
        self._metrics.events_dropped.labels(*self._labels, reason.value).inc(n)
        self._in_flight.dec(n)


class Metrics:
    """All metrics on one registry; tests and the embedded server each get their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._accounts: dict[tuple[str, str], Account] = {}
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... (Linux /proc).
        ProcessCollector(registry=r)
        self.build_info = Info("gateway_build", "The running gateway's version and Python.", registry=r)
        self.build_info.info({"version": version(), "python": platform.python_version()})
        self.events_received = Counter(
            "gateway_events_received_total",
            "Events read by a source, before normalization; a fan-out source's events count once per"
            " destination (each copy is accounted on its own).",
            ["source", "destination"],
            registry=r,
        )
        self.events_forwarded = Counter(
            "gateway_events_forwarded_total",
            "Events the upstream accepted.",
            ["source", "destination"],
            registry=r,
        )
        self.events_handed_off = Counter(
            "gateway_events_handed_off_total",
            "Events written to the shared Kafka buffer topic (buffer: {type: kafka}) and acknowledged by its"
            " brokers: from there the buffer topic's Kafka source accounts for them under its own source name"
            " (on this instance or another of the consumer group).",
            ["source", "destination"],
            registry=r,
        )
        self.events_refused = Counter(
            "gateway_events_refused_total",
            "Events not admitted at intake (the sender keeps and resends them): answered 429/503, or the"
            " request went away while waiting; with the request's invalid events.  By reason: buffer_full,"
            " credentials (the upstream refuses the gateway's own), unavailable (the spool cannot write, a"
            " Kafka buffer's brokers do not acknowledge), draining, cancelled.",
            ["source", "destination", "reason"],
            registry=r,
        )
        self.events_rejected = Counter(
            "gateway_events_rejected_total",
            "Events refused for good and dead-lettered (stage intake or upstream), by reason: invalid_event,"
            " forbidden_field_value, decode_error, upstream_rejected, config_error.",
            ["source", "destination", "stage", "reason"],
            registry=r,
        )
        self.events_dropped = Counter(
            "gateway_events_dropped_total",
            "Events given up on undelivered and never answered 2xx, by reason: shutdown (the stop's deadline,"
            " buffered or in flight), revoked (a revoked partition, read again by its new owner),"
            " retries_exhausted, sink_stopped, deadletter_failed, internal_error.  Not counted where the"
            " buffer keeps them (the disk spool sends them again).",
            ["source", "destination", "reason"],
            registry=r,
        )
        self.requests_refused = Counter(
            "gateway_intake_requests_refused_total",
            "Intake requests refused as a whole, by reason (auth, too_large, rate_limited, bad_request,"
            " buffer_full, credentials, unavailable, draining, ...).",
            ["source", "reason"],
            registry=r,
        )
        self.connections_refused = Counter(
            "gateway_connections_refused_total",
            "Connections closed as they were accepted, by listener (intake, admin) and reason (max_connections).",
            ["listener", "reason"],
            registry=r,
        )
        self.batch_events = Histogram(
            "gateway_batch_events",
            "Events per upstream batch.",
            ["destination"],
            buckets=(1, 10, 50, 100, 250, 500, 750, 1000),
            registry=r,
        )
        self.batch_bytes = Histogram(
            "gateway_batch_bytes",
            "Bytes per upstream request body.",
            ["destination"],
            buckets=(1e3, 1e4, 1e5, 2.5e5, 5e5, 1e6, 2e6, 4e6, 8e6),
            registry=r,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total",
            "Upstream calls by endpoint and HTTP status (or 'error' for network failures).",
            ["endpoint", "status"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Upstream call duration by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "gateway_upstream_retries_total",
            "Upstream calls retried, by reason (status code or 'network').",
            ["destination", "reason"],
            registry=r,
        )
        self.upstream_polls = Counter(
            "gateway_upstream_polls_total",
            "Polls of 202-accepted upstream requests, by outcome.",
            ["destination", "outcome"],
            registry=r,
        )
        self.upstream_in_flight = Gauge(
            "gateway_upstream_in_flight_requests",
            "Upstream requests currently in flight.",
            ["destination"],
            registry=r,
        )
        self.events_recovered = Counter(
            "gateway_events_recovered_total",
            "Events a disk spool held from an earlier run of the gateway, read back to be sent: on the"
            " received side of the accounting (they were counted received by that run).",
            ["source", "destination"],
            registry=r,
        )
        self.events_in_flight = Gauge(
            "gateway_events_in_flight_events",
            "Events received (or recovered) and not yet accounted for: being admitted, buffered, sent,"
            " retried or polled.  received + recovered = forwarded + handed_off + duplicates + rejected"
            " + refused + dropped + this, per source and destination.",
            ["source", "destination"],
            registry=r,
        )
        self.buffer_events = Gauge("gateway_buffer_events", "Events held in the buffer.", ["destination"], registry=r)
        self.delivery_in_flight_events = Gauge(
            "gateway_delivery_in_flight_events",
            "Events taken from the buffer and not yet resolved: being sent, retried or polled.",
            ["destination"],
            registry=r,
        )
        self.buffer_bytes = Gauge("gateway_buffer_bytes", "Bytes held in the buffer.", ["destination"], registry=r)
        self.buffer_max_events = Gauge(
            "gateway_buffer_max_events", "Buffer capacity in events.", ["destination"], registry=r
        )
        self.auth_token_refreshes = Counter(
            "gateway_auth_token_refreshes_total",
            "Upstream credential refreshes (OAuth2 token fetches, token file reloads), by reason.",
            ["reason"],
            registry=r,
        )
        self.deadletters = Counter(
            "gateway_deadletters_total",
            "Events written to the dead-letter store, by reason (the vocabulary of gateway_events_rejected_total).",
            ["source", "reason"],
            registry=r,
        )
        self.config_reloads = Counter(
            "gateway_config_reloads_total",
            "Configuration reloads (SIGHUP, run --watch-config), by result: ok; refused (invalid, or a setting"
            " that changes only on restart); failed (could not be built). The running configuration stays"
            " unless ok.",
            ["result"],
            registry=r,
        )
        self.duplicates = Counter(
            "gateway_duplicates_dropped_total",
            "Events dropped as duplicates of an already accepted id (resolved delivered).",
            ["source", "destination"],
            registry=r,
        )
        # Kafka
        self.kafka_consumed = Counter(
            "gateway_kafka_messages_consumed_total",
            "Kafka messages consumed, per topic.",
            ["source", "topic"],
            registry=r,
        )
        self.kafka_lag = Gauge(
            "gateway_kafka_consumer_lag",
            "End offset minus committed offset, per partition.",
            ["source", "topic", "partition"],
            registry=r,
        )
        self.kafka_commits = Counter(
            "gateway_kafka_commits_total", "Offset commits, by outcome.", ["source", "outcome"], registry=r
        )
        self.kafka_rebalances = Counter(
            "gateway_kafka_rebalances_total",
            "Partition assignments and revocations.",
            ["source", "kind"],
            registry=r,
        )
        self.kafka_paused = Gauge(
            "gateway_kafka_paused_partitions",
            "Partitions paused for backpressure.",
            ["source"],
            registry=r,
        )
        self.kafka_deadlettered = Counter(
            "gateway_kafka_deadlettered_total",
            "Kafka messages sent to the dead-letter topic, by reason (the vocabulary of"
            " gateway_events_rejected_total).",
            ["source", "reason"],
            registry=r,
        )
        # Pull sources (type: poll).
        self.poll_lag = Gauge(
            "gateway_poll_lag_seconds",
            "Age of the newest event a pull source delivered (0 once a poll finds nothing new).",
            ["source"],
            registry=r,
        )
        self.poll_errors = Counter(
            "gateway_poll_errors_total",
            "Polls of a vendor API that failed, by reason (rate_limited, malformed_page, auth, http_error, ...).",
            ["source", "reason"],
            registry=r,
        )
        self.poll_pages = Counter(
            "gateway_poll_pages_total",
            "Pages of a vendor API read and delivered.",
            ["source"],
            registry=r,
        )

    def account(self, source: str, destination: str) -> Account:
        """The accounting terms of ``source`` → ``destination`` (one object per pair, kept)."""
        key = (source, destination)
        acct = self._accounts.get(key)
        if acct is None:
            acct = self._accounts[key] = Account(self, source, destination)
        return acct
