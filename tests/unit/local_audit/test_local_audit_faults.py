"""Fault knobs of the local audit log."""

from __future__ import annotations

import pydantic
import pytest

from gateway.local_audit.faults import FaultInjector
from gateway.local_audit.settings import FaultSettings


def test_no_faults_by_default() -> None:
    faults = FaultInjector(FaultSettings())
    assert all(faults.decide() is None for _ in range(1000))
    assert not any(faults.accept_this_call() for _ in range(10))
    assert sum(faults.injected.values()) == 0


def test_outage_answers_503_with_retry_after() -> None:
    faults = FaultInjector(FaultSettings(outage=True, retry_after_secs=9))
    decision = faults.decide()
    assert decision is not None
    assert (decision.http_status, decision.pangea_status, decision.retry_after) == (503, "ServiceNotAvailable", 9)
    assert faults.injected["outage"] == 1


def test_full_5xx_ratio_fails_every_call_with_a_server_error() -> None:
    faults = FaultInjector(FaultSettings(error_5xx_ratio=1.0, seed=1))
    statuses = set()
    for _ in range(200):
        decision = faults.decide()
        assert decision is not None and decision.kind == "error_5xx"
        statuses.add(decision.http_status)
    assert statuses == {500, 502, 503}


def test_full_429_ratio_always_sets_retry_after() -> None:
    faults = FaultInjector(FaultSettings(error_429_ratio=1.0, retry_after_secs=3))
    decision = faults.decide()
    assert decision is not None
    assert (decision.http_status, decision.pangea_status, decision.retry_after) == (429, "TooManyRequests", 3)


def test_ratios_are_shares_of_calls_and_seeded_runs_repeat() -> None:
    def run() -> list[int]:
        faults = FaultInjector(FaultSettings(error_5xx_ratio=0.2, error_429_ratio=0.3, seed=42))
        return [d.http_status if (d := faults.decide()) else 200 for _ in range(5000)]

    first = run()
    assert first == run()
    share_429 = first.count(429) / len(first)
    share_5xx = sum(first.count(s) for s in (500, 502, 503)) / len(first)
    assert 0.25 < share_429 < 0.35 and 0.15 < share_5xx < 0.25


def test_every_nth_call_is_accepted_counting_from_the_change() -> None:
    faults = FaultInjector(FaultSettings())
    faults.update({"accept_every_nth": 3})
    assert [faults.accept_this_call() for _ in range(7)] == [False, False, True, False, False, True, False]
    assert faults.injected["accepted_202"] == 2


def test_updates_merge_reset_and_validate() -> None:
    faults = FaultInjector(FaultSettings(latency_ms=5))
    assert faults.update({"outage": True}).latency_ms == 5
    settings = faults.update({"error_429_ratio": 0.5}, reset=True)
    assert settings == FaultSettings(error_429_ratio=0.5)
    with pytest.raises(pydantic.ValidationError):
        faults.update({"error_429_ratio": 2})
    with pytest.raises(pydantic.ValidationError):
        faults.update({"no_such_knob": 1})
    assert faults.settings.error_429_ratio == 0.5


async def test_latency_is_counted_when_applied() -> None:
    faults = FaultInjector(FaultSettings(latency_ms=1))
    await faults.delay()
    assert faults.injected["latency"] == 1
