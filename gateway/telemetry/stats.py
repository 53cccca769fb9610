"""The figures of the periodic stats line and of ``GET /status``, read from the metrics registry.

Read by metric name (not through :class:`~gateway.telemetry.metrics.Metrics` attributes) so that
a metric added or renamed by the delivery side keeps showing up here without an edit: a series
that does not exist simply reads 0 (or ``None`` for the in-flight gauge).

Per source: ``received`` (read at intake, once per destination of a fan-out), ``rejected``
(refused for good, at intake or upstream), ``dead_lettered``, ``refused`` (events not admitted,
kept by their sender), ``refused_requests`` (whole requests refused), ``duplicates``.
Per destination: ``delivered``, ``handed_off`` (written to a Kafka buffer's topic, acknowledged:
the topic's Kafka source delivers them), ``rejected``, ``dropped``, ``retries`` (upstream calls retried),
``buffered`` (events held) and ``in_flight`` (events taken from the buffer and not yet resolved,
retrying ones included), when the gauge exists.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry

# sample name → (label naming the component, which side, figure)
_FIGURES: dict[str, tuple[str, str, str]] = {
    "gateway_events_received_total": ("source", "sources", "received"),
    "gateway_events_rejected_total": ("source", "sources", "rejected"),
    "gateway_deadletters_total": ("source", "sources", "dead_lettered"),
    "gateway_events_refused_total": ("source", "sources", "refused"),
    "gateway_intake_requests_refused_total": ("source", "sources", "refused_requests"),
    "gateway_duplicates_dropped_total": ("source", "sources", "duplicates"),
    "gateway_events_forwarded_total": ("destination", "destinations", "delivered"),
    "gateway_events_handed_off_total": ("destination", "destinations", "handed_off"),
    "gateway_events_dropped_total": ("destination", "destinations", "dropped"),
    "gateway_upstream_retries_total": ("destination", "destinations", "retries"),
    "gateway_buffer_events": ("destination", "destinations", "buffered"),
}
_DEST_REJECTED = "gateway_events_rejected_total"
IN_FLIGHT_GAUGES = ("gateway_delivery_in_flight_events",)
"""Gauges of events out of the buffer and not yet resolved, by ``destination``: read when present."""

_SOURCE_FIGURES = ("received", "rejected", "dead_lettered", "refused", "refused_requests", "duplicates")
_DEST_FIGURES = ("delivered", "handed_off", "rejected", "dropped", "retries", "buffered")


def figures(registry: CollectorRegistry, sources: list[str], destinations: list[str]) -> dict[str, Any]:
    """``{"sources": {name: {figure: n}}, "destinations": {name: {figure: n}}}``, every configured
    name present (with zeros) and figures as integers."""
    out: dict[str, dict[str, dict[str, Any]]] = {
        "sources": {s: dict.fromkeys(_SOURCE_FIGURES, 0) for s in sources},
        "destinations": {d: {**dict.fromkeys(_DEST_FIGURES, 0), "in_flight": None} for d in destinations},
    }
    in_flight: dict[str, float] = defaultdict(float)
    seen_in_flight = False
    for family in registry.collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name in IN_FLIGHT_GAUGES:
                seen_in_flight = True
                in_flight[labels.get("destination", "")] += value
                continue
            spec = _FIGURES.get(name)
            if spec is None:
                continue
            label, side, figure = spec
            _add(out[side], labels.get(label), figure, value)
            if name == _DEST_REJECTED:
                _add(out["destinations"], labels.get("destination"), "rejected", value)
    if seen_in_flight:
        for name, row in out["destinations"].items():
            row["in_flight"] = int(in_flight.get(name, 0))
    return out


def _add(side: dict[str, dict[str, Any]], name: str | None, figure: str, value: float) -> None:
    row = side.get(name or "")
    if row is not None:  # a series of a component no longer configured, or without the label
        row[figure] += int(value)
