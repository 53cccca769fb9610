"""The one retry classifier and the backoff: what is retried, how long we wait."""

from __future__ import annotations

import email.utils

import aiohttp
import pytest

from gateway.delivery.retry import Verdict, backoff_secs, classify, parse_retry_after, retry_reason
from gateway.errors import RetriableUpstreamError, UpstreamConfigError


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    assert classify(status, None) is Verdict.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422, 501])
def test_client_errors_and_501_are_rejected(status: int) -> None:
    assert classify(status, None) is Verdict.REJECT


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("refused"),
        TimeoutError(),
        ConnectionResetError(),
        OSError("network unreachable"),
        RetriableUpstreamError("token endpoint down"),
    ],
)
def test_network_errors_are_retried(exc: BaseException) -> None:
    assert classify(None, exc) is Verdict.RETRY


@pytest.mark.parametrize(
    "exc", [ValueError("bug"), UpstreamConfigError("client refused"), aiohttp.InvalidURL("not a url")]
)
def test_other_exceptions_are_rejected(exc: BaseException) -> None:
    assert classify(None, exc) is Verdict.REJECT


def test_retry_reason_is_the_status_or_network() -> None:
    assert retry_reason(429, None) == "429"
    assert retry_reason(None, aiohttp.ServerDisconnectedError()) == "network"


def test_backoff_is_full_jitter_below_the_exponential_ceiling() -> None:
    assert backoff_secs(0, 0.5, 30.0, uniform=lambda lo, hi: hi) == 0.5
    assert backoff_secs(3, 0.5, 30.0, uniform=lambda lo, hi: hi) == 4.0
    assert backoff_secs(10, 0.5, 30.0, uniform=lambda lo, hi: hi) == 30.0
    assert backoff_secs(3, 0.5, 30.0, uniform=lambda lo, hi: lo) == 0.0
    for attempt in range(50):
        assert 0.0 <= backoff_secs(attempt, 0.5, 30.0) <= 30.0


def test_backoff_survives_days_of_retries_without_overflow() -> None:
    assert backoff_secs(100_000, 0.5, 30.0, uniform=lambda lo, hi: hi) == 30.0


def test_retry_after_is_a_floor_on_the_backoff() -> None:
    assert backoff_secs(0, 0.5, 30.0, 7.0, uniform=lambda lo, hi: hi) == 7.0
    # jitter above the floor still applies
    assert backoff_secs(6, 0.5, 30.0, 7.0, uniform=lambda lo, hi: hi) == 30.0


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 12, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(12.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan"])
def test_unusable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None
