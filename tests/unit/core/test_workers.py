"""gateway/workers.py: merging the workers' metrics, the worker count, exit codes."""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import ConfigError
from gateway.workers import exit_code, merge_metrics, resolve_workers


def exposition(received: int, buffered: int, sizes: list[float]) -> str:
    """One worker's /metrics, made by prometheus_client as the gateway's are."""
    r = CollectorRegistry()
    c = Counter("gateway_events_received_total", "Events received.", ["source"], registry=r)
    c.labels("sdk").inc(received)
    c.labels('we"ird\\').inc(1)
    Gauge("gateway_buffer_events", "Events held in the buffer.", ["destination"], registry=r).labels("default").set(
        buffered
    )
    h = Histogram("gateway_batch_events", "Events per batch.", registry=r, buckets=(10, 100))
    for v in sizes:
        h.observe(v)
    return generate_latest(r).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_merged_metrics_sum_counters_gauges_and_histograms_sample_by_sample_and_parse_back() -> None:
    merged = merge_metrics([exposition(3, 10, [5, 50]), exposition(4, 20, [500])])
    got = samples(merged)
    assert got[("gateway_events_received_total", (("source", "sdk"),))] == 7
    assert got[("gateway_events_received_total", (("source", 'we"ird\\'),))] == 2
    assert got[("gateway_buffer_events", (("destination", "default"),))] == 30
    assert got[("gateway_batch_events_bucket", (("le", "10.0"),))] == 1
    assert got[("gateway_batch_events_bucket", (("le", "100.0"),))] == 2
    assert got[("gateway_batch_events_bucket", (("le", "+Inf"),))] == 3
    assert got[("gateway_batch_events_count", ())] == 3 and got[("gateway_batch_events_sum", ())] == 555
    assert not any(name.endswith("_created") for name, _ in got)
    assert "# TYPE gateway_events_received_total counter" in merged.splitlines()


def test_workers_auto_is_the_cpus_this_process_may_use_and_a_bad_value_is_a_config_error() -> None:
    assert resolve_workers("auto") == len(os.sched_getaffinity(0))
    assert resolve_workers("3") == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="--workers"):
            resolve_workers(bad)


def test_a_worker_killed_by_a_signal_reports_128_plus_the_signal() -> None:
    assert exit_code(-9) == 137 and exit_code(-15) == 143 and exit_code(0) == 0 and exit_code(2) == 2


@pytest.mark.parametrize("worker", [1, 2])
async def test_a_worker_other_than_0_starts_no_pull_source_at_start_or_on_reload(tmp_path, worker: int) -> None:
    """Both paths go through Gateway._start_pulling: two pollers of one cursor would read every page twice."""
    from pathlib import Path

    from gateway.app import Gateway
    from gateway.config import parse_config
    from gateway.preflight import RunOptions
    from gateway.sinks.deadletter.local import LocalDeadLetterStore

    config = parse_config(
        {
            "destinations": {"default": {}},
            "sources": {
                "okta_log": {
                    "type": "poll",
                    "vendor": "okta_system_log",
                    "url": "https://acme.okta.example",
                    "token": "t",
                    "destination": "default",
                }
            },
        },
        env={},
    )
    gw = Gateway(config, RunOptions(data_dir=Path(tmp_path), worker=worker))
    gw.deadletters = LocalDeadLetterStore(Path(tmp_path) / "dl.db", gw.metrics)
    try:
        # No destinations are given: reaching for one would raise; a worker other than 0 returns first.
        await gw._start_pulling("okta_log", config.sources["okta_log"], {})  # type: ignore[arg-type]
        assert gw.poll_sources == []
    finally:
        await gw.deadletters.close()
