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

# `*_created` series double every counter's cardinality and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client


class Metrics:
    """All metrics on one registry; tests and the embedded server each get their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... (Linux /proc).
        ProcessCollector(registry=r)
        self.build_info = Info("gateway_build", "The running gateway's version and Python.", registry=r)
        self.build_info.info({"version": version(), "python": platform.python_version()})
        self.events_received = Counter(
            "gateway_events_received_total",
            "Events accepted at intake, before normalization.",
            ["source"],
            registry=r,
        )
        self.events_forwarded = Counter(
            "gateway_events_forwarded_total",
            "Events the upstream accepted.",
            ["destination"],
            registry=r,
        )
        self.events_refused = Counter(
            "gateway_events_refused_total",
            "Events answered 429/503 at intake and not admitted (the sender keeps and resends them), by reason:"
            " buffer_full, credentials (the upstream refuses the gateway's own), unavailable (the spool cannot"
            " write), draining.",
            ["source", "destination", "reason"],
            registry=r,
        )
        self.events_rejected = Counter(
            "gateway_events_rejected_total",
            "Events refused for good (at intake or by the upstream), by stage and reason.",
            ["source", "destination", "stage", "reason"],
            registry=r,
        )
        self.events_dropped = Counter(
            "gateway_events_dropped_total",
            "Events given up on undelivered and never answered 2xx, by reason: shutdown (the stop's deadline,"
            " buffered or in flight), revoked (a revoked partition, read again by its new owner).",
            ["destination", "reason"],
            registry=r,
        )
        self.requests_refused = Counter(
            "gateway_intake_requests_refused_total",
            "Intake requests refused as a whole, by reason (auth, too_large, buffer_full, ...).",
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
            "Events written to the dead-letter store, by reason.",
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
            "Events dropped as duplicates of an already accepted id.",
            ["source"],
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
            "Kafka messages sent to the dead-letter topic, by reason.",
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
