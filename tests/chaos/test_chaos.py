"""Lose nothing: SIGKILLs and upstream faults while unique events flow in over HTTP and Kafka.

CI runs the short version.  The long one (>= 50,000 events, 4 SIGKILLs, a 60-second outage)::

    .venv/bin/python -m pytest -m slow tests/chaos -s
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import Harness, Plan


def show(report: object) -> None:
    print()
    print(report.table())  # type: ignore[attr-defined]
    print(report.line())  # type: ignore[attr-defined]


async def test_short_chaos_run_loses_no_acknowledged_event(tmp_path: Path) -> None:
    report = await Harness(tmp_path, Plan()).run()
    show(report)
    assert report.kills >= 3
    assert report.lost == 0, f"acknowledged but not delivered: {report.lost_ids}"
    assert report.accounting_error is None, report.accounting_error
    assert report.acked >= 0.9 * report.sent  # senders retried through the kills and the outage
    for kind in ("auth0", "sdk", "kafka"):
        assert report.by_kind[kind]["acked"] > 0
    assert report.sigterm_exit == 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_long_chaos_run_loses_no_acknowledged_event(tmp_path: Path) -> None:
    plan = Plan(
        auth0_events=25_000,
        sdk_events=10_000,
        kafka_events=20_000,
        per_request=100,
        senders=4,
        send_secs=150.0,
        kills=4,
        first_kill_secs=10.0,
        down_secs=1.0,
        outage_at_secs=30.0,
        outage_secs=60.0,
        drain_secs=240.0,
    )
    report = await Harness(tmp_path, plan).run()
    show(report)
    assert report.kills >= 3 and report.sent >= 50_000
    assert report.lost == 0, f"acknowledged but not delivered: {report.lost_ids}"
    assert report.accounting_error is None, report.accounting_error
    assert report.acked >= 0.95 * report.sent
    assert report.sigterm_exit == 0
