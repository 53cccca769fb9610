"""Issue 17: a pull source waits out the vendor's rate limits (injected clock and sleep).

The poller runs in-process against the loopback :class:`VendorStub` (real HTTP, the vendor's
recorded answers); its clock and sleep are injected, so a 60-second ``X-Rate-Limit-Reset`` costs
nothing and the waits it chose are asserted exactly.  Delivery is a recording admitter that
resolves every page as delivered (the delivery path itself is covered end to end in
``test_poll_sources_e2e.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.acks import AckGroup
from gateway.sources.intake import Admission, Candidate
from gateway.sources.poll.config import PollSourceConfig
from gateway.sources.poll.source import PollError, PollSource
from gateway.telemetry.metrics import Metrics
from tests.integration.vendors.poll_stub import Answer, VendorStub
from tests.support.procs import REPO

FIXTURES = REPO / "tests" / "fixtures" / "vendors"
RESET_NOW = 1718097240.0  # the time of the recorded answers (their X-Rate-Limit-Reset is 1718097240/1718097300)


class RecordingAdmitter:
    """Takes the page's candidates and resolves them delivered at once."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.candidates: list[Candidate] = []

    async def admit(self, candidates: list[Candidate], **_: Any) -> Admission:
        self.candidates.extend(candidates)
        return Admission(AckGroup(0), [], [], 0, len(candidates))


def okta_source(
    stub: VendorStub, tmp: Path, sleeps: list[float], stop_after: float, **overrides: Any
) -> tuple[PollSource, RecordingAdmitter]:
    config = PollSourceConfig(
        type="poll",
        vendor="okta_system_log",
        url=stub.base,
        token="00ExampleOktaApiTokenNotReal0000000000000",  # type: ignore[arg-type]
        destination="default",
        since="2024-06-11T09:00:00.000Z",
        page_size=2,
        interval_secs=15,
        **overrides,
    )
    admitter = RecordingAdmitter()
    source: PollSource

    async def sleep(secs: float) -> None:
        sleeps.append(secs)
        if secs == stop_after:
            source._stop.set()

    source = PollSource("okta_log", config, admitter, tmp, clock=lambda: RESET_NOW, sleep=sleep)  # type: ignore[arg-type]
    return source, admitter


async def run(source: PollSource) -> None:
    await source.start()
    assert source._task is not None
    await source._task
    await source.stop(0)


def uuids(admitter: RecordingAdmitter) -> list[str]:
    return [c.dedup_key or "" for c in admitter.candidates]


def expected_uuids() -> list[str]:
    return [
        e["uuid"]
        for n in ("okta_logs_page1.json", "okta_logs_page2.json")
        for e in json.loads((FIXTURES / n).read_bytes())
    ]


async def test_okta_429_is_waited_out_until_x_rate_limit_reset_and_the_page_is_read_again(tmp_path: Path) -> None:
    with VendorStub(FIXTURES / "okta_logs_exchanges.json") as stub:
        page1 = stub.exchanges[0]["request"]["url"]
        stub.queue_first(page1, stub.exchange_answer(4))  # Okta's recorded 429: reset at 1718097300, no Retry-After
        sleeps: list[float] = []
        source, admitter = okta_source(stub, tmp_path, sleeps, stop_after=15)
        await run(source)
        assert sleeps == [60.0, 15]  # until the reset, then the interval once the log was read to its end
        assert stub.count(page1) == 2
        assert uuids(admitter) == expected_uuids()
        assert admitter.metrics.poll_errors.labels("okta_log", "rate_limited")._value.get() == 1


async def test_a_retry_after_header_is_honoured_over_the_reset_header(tmp_path: Path) -> None:
    with VendorStub(FIXTURES / "okta_logs_exchanges.json") as stub:
        page2 = stub.exchanges[1]["request"]["url"]
        limited = stub.exchange_answer(4)
        stub.queue_first(page2, Answer(429, [*limited.headers, ("Retry-After", "7")], limited.body))
        sleeps: list[float] = []
        source, admitter = okta_source(stub, tmp_path, sleeps, stop_after=15)
        await run(source)
        assert sleeps == [7.0, 15]
        assert stub.count(page2) == 2 and uuids(admitter) == expected_uuids()  # nothing lost, nothing twice


async def test_an_exhausted_remaining_count_waits_for_the_reset_before_the_next_request(tmp_path: Path) -> None:
    with VendorStub(FIXTURES / "okta_logs_exchanges.json") as stub:
        page1 = stub.exchanges[0]["request"]["url"]
        good = stub.exchange_answer(1)
        exhausted = {"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(int(RESET_NOW) + 30)}
        stub.queue_first(page1, Answer(200, [(k, exhausted.get(k, v)) for k, v in good.headers], good.body))
        sleeps: list[float] = []
        source, admitter = okta_source(stub, tmp_path, sleeps, stop_after=15)
        await run(source)
        assert sleeps == [30.0, 15]  # page 2 waited for the reset; no 429 was needed
        assert uuids(admitter) == expected_uuids()
        assert admitter.metrics.poll_errors.labels("okta_log", "rate_limited")._value.get() == 0


HOSTILE_PAGES = {
    "truncated": b'[{"uuid": "a", "eventType": "x"',
    "an object, not an array": b'{"uuid": "a", "eventType": "x"}',
    "a string": b'"events"',
    "deep": b"[" * 100 + b"]" * 100,
    "oversized": b"[" + b'"x",' * 300_000 + b'"x"]',
    "empty body": b"",
    "not UTF-8": b'["\xff\xfe"]',
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PAGES))
async def test_a_hostile_page_is_reported_and_neither_admitted_nor_skipped(tmp_path: Path, name: str) -> None:
    with VendorStub(FIXTURES / "okta_logs_exchanges.json") as stub:
        page1, page2 = (ex["request"]["url"] for ex in stub.exchanges[:2])
        good = stub.exchange_answer(1)
        stub.queue_first(page1, Answer(200, good.headers, HOSTILE_PAGES[name]))
        source, admitter = okta_source(stub, tmp_path, [], stop_after=15, max_page_bytes=1024 * 1024)
        await source.open()
        try:
            with pytest.raises(PollError) as info:
                await source.poll_once()
            assert info.value.reason == "malformed_page", info.value
            assert admitter.candidates == [] and source.url == stub.url(page1)
            assert not (tmp_path / "poll" / "okta_log.cursor.json").exists()
            assert await source.poll_once() is True  # the page came good: read, not skipped
            assert uuids(admitter) == expected_uuids()[:2] and source.url == stub.url(page2)
        finally:
            await source.stop(0)


async def test_a_next_link_to_another_origin_is_refused_and_the_token_never_goes_there(tmp_path: Path) -> None:
    with (
        VendorStub(FIXTURES / "okta_logs_exchanges.json") as stub,
        VendorStub(FIXTURES / "okta_logs_exchanges.json") as elsewhere,
    ):
        page1 = stub.exchanges[0]["request"]["url"]
        good = stub.exchange_answer(1)
        moved = [(k, v.replace(stub.base, elsewhere.base)) for k, v in good.headers]
        stub.queue_first(page1, Answer(200, moved, good.body))
        source, admitter = okta_source(stub, tmp_path, [], stop_after=15)
        await source.open()
        try:
            with pytest.raises(PollError, match="another origin"):
                await source.poll_once()
            assert admitter.candidates == [] and elsewhere.asked == []
        finally:
            await source.stop(0)


async def test_a_record_that_cannot_be_mapped_is_refused_alone_and_the_page_moves_on(tmp_path: Path) -> None:
    with VendorStub(FIXTURES / "okta_logs_exchanges.json") as stub:
        page1, page2 = (ex["request"]["url"] for ex in stub.exchanges[:2])
        good = stub.exchange_answer(1)
        records = [*json.loads(good.body), "not an event", {"uuid": "u-9", "eventType": ["wrong", "type"]}]
        stub.queue_first(page1, Answer(200, good.headers, json.dumps(records).encode()))
        source, admitter = okta_source(stub, tmp_path, [], stop_after=15)
        await source.open()
        try:
            assert await source.poll_once() is True
            refused = [c for c in admitter.candidates if c.fields is None]
            assert [c.pointer for c in refused] == ["/2", "/3"] and all(c.errors for c in refused)
            assert [c.dedup_key for c in admitter.candidates if c.fields is not None] == expected_uuids()[:2]
            assert source.url == stub.url(page2)
        finally:
            await source.stop(0)


@pytest.mark.parametrize(
    "page",
    [
        b'{"cursor": "c1", "has_more": false}',
        b'{"cursor": "c1", "has_more": false, "items": {"uuid": "x"}}',
        b'{"has_more": false, "items": []}',
        b'{"cursor": 5, "has_more": false, "items": []}',
        b'{"cursor": "c1", "has_more": "no", "items": []}',
        b"[]",
    ],
)
async def test_a_malformed_onepassword_page_is_reported_and_the_cursor_stays(tmp_path: Path, page: bytes) -> None:
    with VendorStub(FIXTURES / "onepassword_auditevents_exchanges.json") as stub:
        first = stub.exchanges[0]["request"]
        stub.queue_first(first["url"], Answer(200, [("Content-Type", "application/json")], page), first["body"])
        config = PollSourceConfig(
            type="poll",
            vendor="onepassword_audit_events",
            url=stub.base,
            token="t",  # type: ignore[arg-type]
            destination="default",
            since="2024-06-11T09:00:00Z",
            page_size=2,
        )
        admitter = RecordingAdmitter()
        source = PollSource("onepassword", config, admitter, tmp_path, clock=lambda: RESET_NOW)  # type: ignore[arg-type]
        await source.open()
        try:
            with pytest.raises(PollError) as info:
                await source.poll_once()
            assert info.value.reason == "malformed_page" and admitter.candidates == [] and source.position is None
            assert await source.poll_once() is True  # the same reset request, now answered well
            assert source.position == stub.exchanges[1]["request"]["body"]["cursor"]
            assert len(admitter.candidates) == 2
        finally:
            await source.stop(0)


async def test_githubs_403_with_retry_after_is_a_rate_limit_and_a_plain_403_is_an_auth_error(tmp_path: Path) -> None:
    with VendorStub(FIXTURES / "github_auditlog_exchanges.json") as stub:
        page1 = stub.exchanges[0]["request"]["url"]
        limited = [("content-type", "application/json"), ("retry-after", "42"), ("x-ratelimit-remaining", "0")]
        stub.queue_first(page1, Answer(403, [("content-type", "application/json")], b'{"message": "Bad credentials"}'))
        stub.queue_first(page1, Answer(403, limited, b'{"message": "API rate limit exceeded"}'))
        config = PollSourceConfig(
            type="poll",
            vendor="github_audit_log",
            url=stub.base,
            enterprise="acme-enterprise",
            token="ghp_EXAMPLE-classic-pat-not-a-real-token",  # type: ignore[arg-type]
            destination="default",
            since="2024-06-11T09:00:00Z",
            page_size=2,
        )
        admitter = RecordingAdmitter()
        source = PollSource("gh", config, admitter, tmp_path, clock=lambda: RESET_NOW)  # type: ignore[arg-type]
        await source.open()
        try:
            with pytest.raises(PollError) as limited_error:
                await source.poll_once()
            assert limited_error.value.reason == "rate_limited" and limited_error.value.retry_after_secs == 42
            with pytest.raises(PollError) as auth_error:
                await source.poll_once()
            assert auth_error.value.reason == "auth"
            assert await source.poll_once() is True and len(admitter.candidates) == 2  # then the page, once
        finally:
            await source.stop(0)
