"""deploy/grafana-dashboard.json: importable Grafana dashboard over the gateway's
metrics, with a Prometheus data source variable."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

# metric -> labels some panel must group it by (the brief's list of panels)
REQUIRED = {
    "gateway_events_received_total": set(),
    "gateway_events_forwarded_total": set(),
    "gateway_events_handed_off_total": set(),  # the Kafka buffer's term of the accounting
    "gateway_events_rejected_total": {"reason"},
    "gateway_buffer_events": set(),
    "gateway_buffer_bytes": set(),
    "gateway_buffer_max_events": set(),
    "gateway_upstream_request_duration_seconds_bucket": {"le", "endpoint"},
    "gateway_upstream_requests_total": {"status"},
    "gateway_upstream_retries_total": set(),
    "gateway_upstream_polls_total": set(),
    "gateway_kafka_consumer_lag": {"topic", "partition"},
    # issue 16: dead letters, refusals, drops, retrying, reloads
    "gateway_deadletters_total": {"reason"},
    "gateway_intake_requests_refused_total": {"reason"},
    "gateway_connections_refused_total": {"reason"},
    "gateway_events_dropped_total": {"source", "destination", "reason"},
    "gateway_events_refused_total": {"source", "destination", "reason"},
    # the accounting equation's unresolved term, and the delivery side's retrying events
    "gateway_events_in_flight_events": {"source", "destination"},
    "gateway_delivery_in_flight_events": {"destination"},
    "gateway_upstream_in_flight_requests": {"destination"},
    "gateway_config_reloads_total": {"result"},
}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus at scrape time


@pytest.fixture(scope="module")
def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, from the gateway's own metric definitions."""
    from gateway.telemetry.metrics import Metrics

    series: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        name, labels, kind = getattr(metric, "_name", None), getattr(metric, "_labelnames", None), None
        if name is None or labels is None:
            continue
        kind = metric._type
        labels = set(labels)
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = series[f"{name}_count"] = labels
        else:
            series[name] = labels
    return series


@pytest.fixture(scope="module")
def dashboard(repo_root: Path) -> dict[str, Any]:
    return json.loads((repo_root / "deploy/grafana-dashboard.json").read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


def test_dashboard_is_a_current_grafana_schema_with_a_prometheus_variable(dashboard):
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_queries_the_selected_data_source(dashboard):
    for p in _panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_panel_ids_are_unique_and_panels_fit_the_grid(dashboard):
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for p in _panels(dashboard):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]


def test_dashboard_charts_every_gateway_metric_by_its_labels(dashboard):
    exprs = _exprs(dashboard)
    for metric, labels in REQUIRED.items():
        using = [e for e in exprs if re.search(rf"\b{metric}\b", e)]
        assert using, f"no panel shows {metric}"
        if labels:
            grouped = [set(re.findall(r"\w+", g)) for e in using for g in re.findall(r"by \(([^)]*)\)", e)]
            assert any(labels <= g for g in grouped), f"{metric} is never grouped by {labels}"


def test_queries_use_only_metrics_and_labels_the_gateway_exports(dashboard, exported_series):
    assert set(REQUIRED) <= set(exported_series), set(REQUIRED) - set(exported_series)
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for e in _exprs(dashboard) + variables:
        metrics = set(re.findall(r"\bgateway_\w+", e))
        unknown = metrics - set(exported_series)
        assert not unknown, f"not exported by gateway.telemetry.metrics: {unknown} in {e}"
        labels = TARGET_LABELS.union(*(exported_series[m] for m in metrics))
        used = {label for g in re.findall(r"by \(([^)]*)\)", e) for label in re.findall(r"\w+", g)}
        used |= set(re.findall(r"(\w+)\s*(?:=~|!=|=)\s*\"", e))
        used |= set(re.findall(r"label_values\([^,]*,\s*(\w+)\)", e))
        assert used <= labels, f"labels {used - labels} not on {metrics}: {e}"


def test_queries_are_well_formed(dashboard):
    for e in _exprs(dashboard):
        assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), e
        for match in re.finditer(r"rate\((\w+)", e):
            assert match.group(1).endswith(("_total", "_bucket")), f"rate() of a gauge: {e}"
