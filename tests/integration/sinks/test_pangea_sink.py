"""PangeaSink against a real HTTP upstream on loopback: delivery, retries, 202 polling, rejections."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest
from pydantic import SecretStr

from gateway.acks import Ack, AckStatus
from gateway.app import Gateway, RunOptions
from gateway.batching import Batch
from gateway.config import load_config
from gateway.event import Event
from gateway.sinks.pangea.config import PollConfig, RetryConfig, UpstreamConfig
from gateway.sinks.pangea.sink import PangeaSink
from gateway.telemetry.metrics import Metrics
from tests.integration.sinks.upstream_stub import (
    AckLog,
    RecordingDeadLetters,
    Reply,
    Seen,
    SleepRecorder,
    UpstreamStub,
    canonical_hash,
    envelope,
)
from tests.support.accounting import sample_sum

TOKEN = "pts_stub_token"
DEST = "default"
CONFIG_ID = "pci_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"


@pytest.fixture
async def stub() -> AsyncIterator[UpstreamStub]:
    s = UpstreamStub(tokens=(TOKEN,))
    await s.start()
    yield s
    await s.stop()


class Harness:
    def __init__(self, sink: PangeaSink, metrics: Metrics, dead: RecordingDeadLetters, sleep: SleepRecorder) -> None:
        self.sink = sink
        self.metrics = metrics
        self.dead = dead
        self.sleep = sleep
        self.acks = AckLog()

    def batch(self, n: int, *, source: str = "sdk", want_envelope: bool = False) -> Batch:
        events = [
            Event(
                item=orjson.dumps({"event": {"message": f"event {i}", "actor": "alice"}}),
                ack=_ack(self.acks, i),
                source=source,
                want_envelope=want_envelope,
            )
            for i in range(n)
        ]
        return Batch(DEST, events)

    def status(self, key: int) -> AckStatus:
        return self.acks.by_key[key][0]  # type: ignore[no-any-return]

    def detail(self, key: int) -> Any:
        """The ack's detail; a per-event result kept as its JSON text (``msgspec.Raw``) read."""
        detail = self.acks.by_key[key][1]
        return msgspec.json.decode(detail) if isinstance(detail, msgspec.Raw) else detail

    def counter(self, name: str, **labels: str) -> float:
        return sample_sum(self.metrics.registry, name, **labels)


def _ack(receiver: AckLog, key: int) -> Ack:
    return Ack(receiver, key)


def upstream_config(url: str, **over: Any) -> UpstreamConfig:
    base: dict[str, Any] = {
        "url": url,
        "token": SecretStr(TOKEN),
        "retry": RetryConfig(initial_backoff_secs=0.01, max_backoff_secs=0.05),
        "poll": PollConfig(initial_delay_secs=0.01, max_delay_secs=0.05, deadline_secs=10),
    }
    base.update(over)
    return UpstreamConfig(**base)


@pytest.fixture
async def make(stub: UpstreamStub) -> AsyncIterator[Any]:
    made: list[PangeaSink] = []

    async def factory(
        *, sleep: Any = None, on_invalid_schema: Any = None, deadletters: Any = None, **over: Any
    ) -> Harness:
        metrics = Metrics()
        dead = deadletters or RecordingDeadLetters()
        recorder = SleepRecorder()
        sink = PangeaSink(
            DEST,
            CONFIG_ID,
            upstream_config(stub.base_url, **over),
            metrics,
            dead,
            on_invalid_schema=on_invalid_schema,
            sleep=sleep or recorder,
            clock=recorder.monotonic if sleep is None else time.monotonic,
        )
        await sink.start()
        made.append(sink)
        return Harness(sink, metrics, dead, recorder)

    yield factory
    for s in made:
        await s.stop()


def hashes_of(seen: Seen) -> list[str]:
    return [canonical_hash(item) for item in seen.json["events"]]


# -- delivery --------------------------------------------------------------------------------


async def test_delivers_a_batch_and_resolves_every_ack_with_its_upstream_hash(stub: UpstreamStub, make: Any) -> None:
    h = await make()
    await h.sink.send(h.batch(3))

    [req] = stub.seen("/v2/log")
    body = req.json
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["Content-Type"] == "application/json"
    assert body["config_id"] == CONFIG_ID
    assert "verbose" not in body
    assert [e["event"]["message"] for e in body["events"]] == ["event 0", "event 1", "event 2"]
    expected = hashes_of(req)
    assert [h.detail(i) for i in range(3)] == [{"hash": x} for x in expected]
    assert all(h.status(i) is AckStatus.DELIVERED for i in range(3))
    assert h.acks.resolutions == 3
    assert h.counter("gateway_events_forwarded_total", destination=DEST) == 3
    assert h.counter("gateway_upstream_requests_total", endpoint="/v2/log", status="200") == 1
    assert h.counter("gateway_batch_events_count", destination=DEST) == 1
    assert h.counter("gateway_upstream_in_flight_requests", destination=DEST) == 0
    assert h.dead.letters == []


async def test_requests_verbose_only_when_an_event_wants_the_envelope(stub: UpstreamStub, make: Any) -> None:
    h = await make()
    await h.sink.send(h.batch(2, want_envelope=True))
    [req] = stub.seen("/v2/log")
    assert req.json["verbose"] is True
    assert h.detail(0)["envelope"] == {"event": {"message": "event 0", "actor": "alice"}}


# -- retries ---------------------------------------------------------------------------------


async def test_retries_on_429_honouring_retry_after(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v2/log", Reply(429, envelope("TooManyRequests", {}, "prq_busy"), {"Retry-After": "7"}))
    h = await make()
    await h.sink.send(h.batch(2))

    assert len(stub.seen("/v2/log")) == 2
    assert h.sleep.delays and h.sleep.delays[0] >= 7.0  # the upstream's floor, above the 0.01 s backoff
    assert all(h.status(i) is AckStatus.DELIVERED for i in range(2))
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="429") == 1
    assert h.counter("gateway_events_dropped_total", destination=DEST, reason="429") == 0
    assert h.dead.letters == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_retries_5xx(stub: UpstreamStub, make: Any, status: int) -> None:
    stub.script("/v2/log", Reply(status, b"<html>bad gateway</html>"))
    h = await make()
    await h.sink.send(h.batch(1))
    assert len(stub.seen("/v2/log")) == 2
    assert h.status(0) is AckStatus.DELIVERED
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason=str(status)) == 1


async def test_does_not_retry_501_and_dead_letters_the_batch(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v2/log", Reply(501, envelope("NotImplemented", {}, "prq_501")))
    h = await make()
    await h.sink.send(h.batch(2))
    assert len(stub.seen("/v2/log")) == 1
    assert [h.status(i) for i in range(2)] == [AckStatus.REJECTED] * 2
    assert len(h.dead.letters) == 2
    assert {d.reason for d in h.dead.letters} == {"upstream_rejected"}
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="501") == 0


async def test_retries_a_dropped_connection(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v2/log", Reply(drop=True))
    h = await make()
    await h.sink.send(h.batch(2))
    assert len(stub.seen("/v2/log")) == 2
    assert all(h.status(i) is AckStatus.DELIVERED for i in range(2))
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="network") == 1
    assert h.counter("gateway_upstream_requests_total", endpoint="/v2/log", status="error") == 1


async def test_retries_name_the_request_ids_of_earlier_attempts(stub: UpstreamStub, make: Any) -> None:
    stub.script(
        "/v2/log",
        Reply(503, envelope("ServiceNotAvailable", {}, "prq_first")),
        Reply(502, b"", {"x-request-id": "prq_second"}),  # no JSON body: the SDK's header
    )
    h = await make()
    await h.sink.send(h.batch(1))
    first, second, third = stub.seen("/v2/log")
    assert "X-Pangea-Retried-Request-Ids" not in first.headers
    assert second.headers["X-Pangea-Retried-Request-Ids"] == "prq_first"
    assert third.headers["X-Pangea-Retried-Request-Ids"] == "prq_first,prq_second"
    assert first.body == second.body == third.body
    assert h.status(0) is AckStatus.DELIVERED


async def test_exhausted_retries_resolve_errored_without_dead_letters(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v2/log", *[Reply(503, envelope("ServiceNotAvailable", {}, f"prq_{i}")) for i in range(3)])
    h = await make(retry=RetryConfig(initial_backoff_secs=0.01, max_backoff_secs=0.05, max_attempts=3))
    await h.sink.send(h.batch(2))
    assert len(stub.seen("/v2/log")) == 3
    assert [h.status(i) for i in range(2)] == [AckStatus.ERRORED] * 2
    assert "503" in h.detail(0)
    assert h.dead.letters == []
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="503") == 2


async def test_cancelled_send_resolves_open_acks_errored(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v2/log", Reply(503, envelope("ServiceNotAvailable", {}, "prq_x")))
    in_backoff = asyncio.Event()

    async def forever(_delay: float) -> None:
        in_backoff.set()
        await asyncio.Event().wait()

    h = await make(sleep=forever)
    batch = h.batch(3)
    task = asyncio.create_task(h.sink.send(batch))
    await in_backoff.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [h.status(i) for i in range(3)] == [AckStatus.ERRORED] * 3
    assert h.acks.resolutions == 3
    assert batch.ack.open_count == 0


# -- 202 polling -----------------------------------------------------------------------------


async def test_log_async_is_polled_until_200_then_acks_carry_the_hashes(stub: UpstreamStub, make: Any) -> None:
    stub.polls_before_done = 2
    h = await make(endpoint="log_async")
    await h.sink.send(h.batch(2))

    [post] = stub.seen("/v2/log_async")
    polls = [r for r in stub.requests if r.path.startswith("/request/")]
    assert len(polls) == 3
    assert all(p.method == "GET" and p.headers["Authorization"] == f"Bearer {TOKEN}" for p in polls)
    assert [h.detail(i) for i in range(2)] == [{"hash": x} for x in hashes_of(post)]
    assert all(h.status(i) is AckStatus.DELIVERED for i in range(2))
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="pending") == 2
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="done") == 1
    assert h.sleep.delays[:3] == [0.01, 0.02, 0.04]  # growing poll delays


async def test_a_slow_log_call_answering_202_with_an_absolute_location_is_polled(stub: UpstreamStub, make: Any) -> None:
    def slow(seen: Seen) -> Reply:
        final = envelope("Success", {"results": [{"hash": "a" * 64}]}, "prq_slow")
        stub.script("/request/prq_slow", Reply(200, final))
        accepted = {"location": f"{stub.base_url}/request/prq_slow", "retry_counter": 0, "ttl_mins": 5760}
        return Reply(202, envelope("Accepted", accepted, "prq_slow"))

    stub.script("/v2/log", slow)
    h = await make()
    await h.sink.send(h.batch(1))
    assert [r.path for r in stub.requests] == ["/v2/log", "/request/prq_slow"]
    assert h.detail(0) == {"hash": "a" * 64}


async def test_poll_location_on_another_origin_is_polled_under_the_configured_url(
    stub: UpstreamStub, make: Any
) -> None:
    accepted = {"location": "http://attacker.invalid:1/request/prq_elsewhere", "retry_counter": 0, "ttl_mins": 1}
    stub.script("/v2/log", Reply(202, envelope("Accepted", accepted, "prq_elsewhere")))
    stub.script("/request/prq_elsewhere", Reply(200, envelope("Success", {"results": [{"hash": "b" * 64}]}, "x")))
    h = await make()
    await h.sink.send(h.batch(1))
    assert h.detail(0) == {"hash": "b" * 64}


async def test_poll_deadline_resends_the_batch_naming_the_accepted_request(stub: UpstreamStub, make: Any) -> None:
    stub.polls_before_done = 1_000_000  # never done
    stub.script(
        "/v2/log_async",
        lambda seen: None,  # default: 202, stored, polled forever
        lambda seen: Reply(200, envelope("Success", {"results": [{"hash": "c" * 64}]}, "prq_resent")),
    )
    # Five minutes of polling pass on the injected clock, without waiting.
    h = await make(endpoint="log_async", poll=PollConfig(initial_delay_secs=1, max_delay_secs=30, deadline_secs=300))
    await h.sink.send(h.batch(1))
    first, second = stub.seen("/v2/log_async")
    polls = [r.path for r in stub.requests if r.path.startswith("/request/")]
    assert len(set(polls)) == 1
    accepted_id = polls[0].rsplit("/", 1)[1]
    assert "X-Pangea-Retried-Request-Ids" not in first.headers
    assert second.headers["X-Pangea-Retried-Request-Ids"] == accepted_id
    assert h.detail(0) == {"hash": "c" * 64}
    # 1, 2, 4, 8, 16, then 30 s apart until the deadline; the last wait ends at it exactly.
    poll_waits = h.sleep.delays[: len(polls)]
    assert poll_waits[:6] == [1, 2, 4, 8, 16, 30]
    assert sum(poll_waits) == 300
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="pending") == len(polls)
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="deadline") == 1
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="poll_deadline") == 1


async def test_a_poll_retry_after_is_a_floor_on_the_next_poll_wait(stub: UpstreamStub, make: Any) -> None:
    def accepted(seen: Seen) -> Reply:
        body = envelope("Accepted", {"location": "/request/prq_ra"}, "prq_ra")
        stub.script(
            "/request/prq_ra",
            Reply(202, body, {"Retry-After": "9"}),
            Reply(200, envelope("Success", {"results": [{"hash": "d" * 64}]}, "prq_ra")),
        )
        return Reply(202, body, {"Retry-After": "3"})

    stub.script("/v2/log", accepted)
    h = await make(poll=PollConfig(initial_delay_secs=0.01, max_delay_secs=0.05, deadline_secs=60))
    await h.sink.send(h.batch(1))
    assert h.sleep.delays == [3, 9]  # the upstream's floors, above the 0.01 s and 0.02 s poll delays
    assert h.detail(0) == {"hash": "d" * 64}
    assert len(stub.seen("/v2/log")) == 1


async def test_a_request_the_upstream_lost_is_resent_naming_it(stub: UpstreamStub, make: Any) -> None:
    def accepted(seen: Seen) -> Reply:
        stub.script("/request/prq_lost", Reply(404, envelope("NotFound", {}, "prq_404")))
        return Reply(202, envelope("Accepted", {"location": "/request/prq_lost"}, "prq_lost"))

    stub.script("/v2/log", accepted)
    h = await make()
    await h.sink.send(h.batch(2))
    first, second = stub.seen("/v2/log")
    assert second.headers["X-Pangea-Retried-Request-Ids"] == "prq_lost"
    assert first.body == second.body
    assert all(h.status(i) is AckStatus.DELIVERED for i in range(2))
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="lost") == 1
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="poll_lost") == 1


async def test_a_transient_poll_failure_is_polled_through_without_resending(stub: UpstreamStub, make: Any) -> None:
    stub.script("/request/prq_stub0001", Reply(503, b"busy"), Reply(502, b"bad gateway"))
    h = await make(endpoint="log_async")
    await h.sink.send(h.batch(2))
    assert len(stub.seen("/v2/log_async")) == 1
    assert [r.path for r in stub.requests].count("/request/prq_stub0001") == 4  # 503, 502, 202, 200
    assert all(h.status(i) is AckStatus.DELIVERED for i in range(2))
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="error") == 2
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="503") == 0


async def test_a_polled_validation_error_rejects_the_pointed_event_and_resends_the_rest(
    stub: UpstreamStub, make: Any
) -> None:
    def accepted(seen: Seen) -> Reply:
        error = {"code": "AboveMaxLength", "detail": "too long", "source": "/events/1/event/actor"}
        stub.script("/request/prq_bad", validation([error], "prq_bad"))
        return Reply(202, envelope("Accepted", {"location": "/request/prq_bad"}, "prq_bad"))

    stub.script("/v2/log", accepted)
    h = await make()
    await h.sink.send(h.batch(3))
    _first, second = stub.seen("/v2/log")
    assert [e["event"]["message"] for e in second.json["events"]] == ["event 0", "event 2"]
    assert [h.status(i) for i in range(3)] == [AckStatus.DELIVERED, AckStatus.REJECTED, AckStatus.DELIVERED]
    assert h.detail(1)[0]["source"] == "/event/actor"
    assert len(h.dead.letters) == 1
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="failed") == 1


# -- rejections ------------------------------------------------------------------------------


def validation(errors: list[dict[str, str]], rid: str = "prq_invalid") -> Reply:
    return Reply(400, envelope("ValidationError", {"errors": errors}, rid, "There was an error validating the body"))


async def test_partial_400_rejects_only_the_pointed_events_and_resends_the_rest(stub: UpstreamStub, make: Any) -> None:
    stub.script(
        "/v2/log",
        validation(
            [
                {"code": "AboveMaxLength", "detail": "too long", "source": "/events/1/event/actor"},
                {"code": "FieldRequired", "detail": "missing", "source": "/events/3/event/message"},
            ]
        ),
    )
    h = await make()
    batch = h.batch(4)
    await h.sink.send(batch)

    _refused, second = stub.seen("/v2/log")
    assert [e["event"]["message"] for e in second.json["events"]] == ["event 0", "event 2"]
    assert second.json["config_id"] == CONFIG_ID
    assert [h.status(i) for i in range(4)] == [
        AckStatus.DELIVERED,
        AckStatus.REJECTED,
        AckStatus.DELIVERED,
        AckStatus.REJECTED,
    ]
    hashes = hashes_of(second)
    assert h.detail(0) == {"hash": hashes[0]} and h.detail(2) == {"hash": hashes[1]}
    assert h.detail(1) == [{"code": "AboveMaxLength", "detail": "too long", "source": "/event/actor"}]
    assert h.detail(3) == [{"code": "FieldRequired", "detail": "missing", "source": "/event/message"}]
    assert [(d.reason, d.destination, d.source, d.payload) for d in h.dead.letters] == [
        ("upstream_rejected", DEST, "sdk", batch.events[1].item),
        ("upstream_rejected", DEST, "sdk", batch.events[3].item),
    ]
    assert "AboveMaxLength" in h.dead.letters[0].detail
    rejected = "gateway_events_rejected_total"
    labels = {"source": "sdk", "destination": DEST, "stage": "upstream"}
    # One reason for both (the dead letter's); the upstream's codes stay in each letter's detail.
    assert h.counter(rejected, **labels, reason="upstream_rejected") == 2
    assert "FieldRequired" in h.dead.letters[1].detail
    assert h.counter("gateway_events_forwarded_total", destination=DEST) == 2
    assert h.acks.resolutions == 4


async def test_resent_remainder_maps_a_second_rejection_back_to_the_batch(stub: UpstreamStub, make: Any) -> None:
    stub.script(
        "/v2/log",
        validation([{"code": "AboveMaxLength", "detail": "x", "source": "/events/0/event/actor"}]),
        # The resend holds batch events 1, 2, 3: its /events/1 is batch event 2.
        validation([{"code": "InvalidString", "detail": "y", "source": "/events/1/event/actor"}]),
    )
    h = await make()
    await h.sink.send(h.batch(4))
    assert [h.status(i) for i in range(4)] == [
        AckStatus.REJECTED,
        AckStatus.DELIVERED,
        AckStatus.REJECTED,
        AckStatus.DELIVERED,
    ]
    assert h.detail(2)[0]["code"] == "InvalidString"
    assert [e["event"]["message"] for e in stub.seen("/v2/log")[2].json["events"]] == ["event 1", "event 3"]


async def test_4xx_pointing_at_no_event_rejects_the_whole_batch(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v2/log", validation([{"code": "InvalidBool", "detail": "bad", "source": "/verbose"}]))
    h = await make()
    await h.sink.send(h.batch(3))
    assert len(stub.seen("/v2/log")) == 1
    assert [h.status(i) for i in range(3)] == [AckStatus.REJECTED] * 3
    assert h.detail(0) == [{"code": "InvalidBool", "detail": "bad", "source": "/verbose"}]
    assert len(h.dead.letters) == 3
    assert (
        h.counter(
            "gateway_events_rejected_total",
            source="sdk",
            destination=DEST,
            stage="upstream",
            reason="upstream_rejected",
        )
        == 3
    )


async def test_forbidden_field_value_rejects_events_not_the_configuration(stub: UpstreamStub, make: Any) -> None:
    stub.script(
        "/v2/log",
        Reply(
            403,
            envelope(
                "ForbiddenFieldValue",
                {"errors": [{"code": "ForbiddenFieldValue", "detail": "no", "source": "/events/0/event/tenant_id"}]},
                "prq_403",
            ),
        ),
    )
    h = await make()
    await h.sink.send(h.batch(2))
    assert [h.status(i) for i in range(2)] == [AckStatus.REJECTED, AckStatus.DELIVERED]
    assert h.dead.letters[0].reason == "upstream_rejected"
    assert await h.sink.check() is None


async def test_invalid_schema_rejects_and_tells_the_destination(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v2/log", Reply(400, envelope("InvalidSchema", {}, "prq_schema", "schema changed")))
    calls: list[int] = []
    h = await make(on_invalid_schema=lambda: calls.append(1))
    await h.sink.send(h.batch(2))
    assert calls == [1]
    assert [h.status(i) for i in range(2)] == [AckStatus.REJECTED] * 2
    assert h.detail(0)[0]["code"] == "InvalidSchema"


# -- configuration errors and readiness ------------------------------------------------------


async def test_ambiguous_config_id_dead_letters_the_batch_and_check_reports_it(stub: UpstreamStub, make: Any) -> None:
    ambiguous = Reply(400, envelope("AmbiguousConfigID", {}, "prq_amb", "Token is valid for several configurations"))
    stub.script("/v2/log", ambiguous)
    h = await make()
    assert await h.sink.check() is None  # schema probe passes
    await h.sink.send(h.batch(2))

    assert [h.status(i) for i in range(2)] == [AckStatus.REJECTED] * 2
    assert {d.reason for d in h.dead.letters} == {"config_error"}
    reason = await h.sink.check()
    assert reason is not None and reason.startswith("AmbiguousConfigID")
    # A later successful send clears it.
    await h.sink.send(h.batch(1))
    assert await h.sink.check() is None


async def test_check_reports_a_configuration_error_from_the_schema_probe(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v1/schema", Reply(400, envelope("MissingConfigID", {}, "prq_m", "config_id required")))
    h = await make()
    reason = await h.sink.check()
    assert reason is not None and reason.startswith("MissingConfigID")
    [probe] = stub.seen("/v1/schema")
    assert probe.json == {"config_id": CONFIG_ID}
    assert await h.sink.check() == reason  # cached: no second probe
    assert len(stub.seen("/v1/schema")) == 1


async def test_check_reports_an_unreachable_upstream_without_raising(stub: UpstreamStub, make: Any) -> None:
    h = await make()
    await stub.stop()
    reason = await h.sink.check()
    assert reason is not None and reason.startswith("upstream unreachable")


class FixAfter(SleepRecorder):
    """A backoff sleep that awaits ``fix()`` at the ``n``-th wait (the operator fixing the credential)."""

    def __init__(self, n: int, fix: Any) -> None:
        super().__init__()
        self.n, self.fix = n, fix

    async def __call__(self, delay: float) -> None:
        await super().__call__(delay)
        if len(self.delays) == self.n:
            await self.fix()


async def test_a_refused_token_is_refreshed_once_then_retried_with_backoff_until_it_works_never_dead_lettered(
    stub: UpstreamStub, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "pts_wrong_but_secret_token"
    # The upstream refuses the token with text echoing our request (its Authorization header).
    echo = envelope("Unauthorized", {}, "prq_401", f"refused Authorization: Bearer {secret}")
    stub.script("/v2/log", *[Reply(401, echo) for _ in range(4)])
    checks: list[str | None] = []

    async def fix() -> None:
        checks.append(await h.sink.check())  # while refused: not ready, and why
        stub.tokens.add(secret)  # the operator grants the token

    sleep = FixAfter(3, fix)
    h = await make(token=SecretStr(secret), sleep=sleep)
    await h.sink.send(h.batch(2))

    # attempt 1, one at once after the refresh, then one per backoff wait: 3 refused, the 5th stored
    assert len(stub.seen("/v2/log")) == 5
    assert len(sleep.delays) == 3
    assert [h.status(i) for i in range(2)] == [AckStatus.DELIVERED] * 2
    assert h.dead.letters == []
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="credentials") == 3
    assert checks == ["upstream refused credentials (HTTP 401 Unauthorized)"]
    assert await h.sink.check() is None  # delivered: the problem is cleared
    assert secret not in caplog.text
    assert "refused Authorization" not in caplog.text  # the upstream's text is not logged at all
    assert secret not in repr(h.sink)


async def test_a_403_that_names_no_event_is_a_refused_credential_and_events_error_after_max_attempts(
    stub: UpstreamStub, make: Any
) -> None:
    stub.script("/v2/log", *[Reply(403, envelope("MissingConfigIDScope", {}, "prq_403")) for _ in range(3)])
    h = await make(retry=RetryConfig(initial_backoff_secs=0.01, max_backoff_secs=0.05, max_attempts=3))
    await h.sink.send(h.batch(2))
    # ERRORED, so the source lets them be sent again: the sender is never blamed, nothing dead-lettered.
    assert [h.status(i) for i in range(2)] == [AckStatus.ERRORED] * 2
    assert h.dead.letters == []
    assert await h.sink.check() == "upstream refused credentials (HTTP 403 MissingConfigIDScope)"


# -- against the real local audit log --------------------------------------------------------


@pytest.fixture
async def local_audit(tmp_path: Any) -> AsyncIterator[Any]:
    from gateway.local_audit.server import LocalAuditServer
    from gateway.local_audit.settings import LocalAuditSettings

    server = LocalAuditServer(LocalAuditSettings(db_path=tmp_path / "audit.db", listen_port=0))
    await server.start()
    yield server
    await server.stop()


async def local_sink(server: Any, config_id: str | None = None, **over: Any) -> Harness:
    metrics, dead, recorder = Metrics(), RecordingDeadLetters(), SleepRecorder()
    upstream = upstream_config(server.base_url, token=SecretStr(server.token), **over)
    sink = PangeaSink(DEST, config_id, upstream, metrics, dead, sleep=recorder)
    await sink.start()
    return Harness(sink, metrics, dead, recorder)


def sdk_search_hashes(server: Any) -> dict[str, str]:
    """Every stored event's hash by message, through the official SDK (which verifies each hash)."""
    from pangea.config import PangeaConfig
    from pangea.services import Audit

    audit = Audit(server.token, config=PangeaConfig(base_url_template=server.base_url))
    response = audit.search("", verify_events=True, limit=100)
    assert response.result is not None
    return {ev.envelope.event["message"]: ev.hash for ev in response.result.events}


async def test_delivers_to_the_local_audit_log_and_the_sdk_verifies_the_stored_hashes(local_audit: Any) -> None:
    from pangea.services.audit.models import EventEnvelope
    from pangea.services.audit.util import verify_envelope_hash

    h = await local_sink(local_audit)
    try:
        await h.sink.send(h.batch(3, want_envelope=True))
        assert await h.sink.check() is None
    finally:
        await h.sink.stop()

    assert all(h.status(i) is AckStatus.DELIVERED for i in range(3))
    for i in range(3):
        result = h.detail(i)
        assert verify_envelope_hash(EventEnvelope(**result["envelope"]), result["hash"])
    stored = await asyncio.to_thread(sdk_search_hashes, local_audit)
    assert stored == {f"event {i}": h.detail(i)["hash"] for i in range(3)}


async def test_log_async_to_the_local_audit_log_is_polled_and_delivered(local_audit: Any) -> None:
    h = await local_sink(local_audit, endpoint="log_async")
    try:
        await h.sink.send(h.batch(2))
    finally:
        await h.sink.stop()
    assert all(h.status(i) is AckStatus.DELIVERED for i in range(2))
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="done") == 1
    stored = await asyncio.to_thread(sdk_search_hashes, local_audit)
    assert stored == {f"event {i}": h.detail(i)["hash"] for i in range(2)}


async def test_local_audit_log_rejecting_one_event_stores_the_others(local_audit: Any) -> None:
    h = await local_sink(local_audit)
    batch = h.batch(3)
    batch.events[1].item = orjson.dumps({"event": {"message": "too long actor", "actor": "x" * 500}})
    try:
        await h.sink.send(batch)
    finally:
        await h.sink.stop()
    assert [h.status(i) for i in range(3)] == [AckStatus.DELIVERED, AckStatus.REJECTED, AckStatus.DELIVERED]
    [error] = h.detail(1)
    assert error["code"] == "AboveMaxLength" and error["source"] == "/event/actor"
    assert [d.payload for d in h.dead.letters] == [batch.events[1].item]
    stored = await asyncio.to_thread(sdk_search_hashes, local_audit)
    assert set(stored) == {"event 0", "event 2"}


async def test_local_audit_log_with_two_configurations_reports_ambiguous_config_id(tmp_path: Any) -> None:
    from gateway.local_audit.server import LocalAuditServer
    from gateway.local_audit.settings import AuditConfigSettings, LocalAuditSettings

    configs = [AuditConfigSettings(id="pci_" + c * 32) for c in ("a", "b")]
    server = LocalAuditServer(LocalAuditSettings(db_path=tmp_path / "audit.db", listen_port=0, configs=configs))
    await server.start()
    try:
        h = await local_sink(server, config_id=None)
        try:
            reason = await h.sink.check()
            await h.sink.send(h.batch(2))
        finally:
            await h.sink.stop()
        good = await local_sink(server, config_id="pci_" + "b" * 32)
        try:
            assert await good.sink.check() is None
            await good.sink.send(good.batch(1))
        finally:
            await good.sink.stop()
    finally:
        await server.stop()
    assert reason is not None and reason.startswith("AmbiguousConfigID")
    assert [h.status(i) for i in range(2)] == [AckStatus.REJECTED] * 2
    assert {d.reason for d in h.dead.letters} == {"config_error"}
    assert good.status(0) is AckStatus.DELIVERED


# -- schema ----------------------------------------------------------------------------------


async def test_fetch_schema_retries_a_transient_failure_and_ignores_display_keys(stub: UpstreamStub, make: Any) -> None:
    fields = [
        {"id": "message", "type": "text", "required": True, "name": "Message", "description": "What happened"},
        {"id": "amount", "type": "integer"},
    ]
    stub.script(
        "/v1/schema",
        Reply(503, envelope("ServiceNotAvailable", {}, "prq_s1")),
        Reply(200, envelope("Success", {"fields": fields}, "prq_s2")),
    )
    h = await make()
    got = await h.sink.fetch_schema()
    assert [(f.id, f.type, f.required) for f in got] == [("message", "text", True), ("amount", "integer", False)]
    assert len(h.sleep.delays) == 1
    assert stub.seen("/v1/schema")[0].json == {"config_id": CONFIG_ID}


async def test_fetch_schema_takes_a_size_of_zero_as_no_limit(stub: UpstreamStub, make: Any) -> None:
    # Pangea's /v1/schema answers `size: 0` for fields without a length limit (and null keys).
    fields = [
        {"id": "message", "type": "text", "required": True, "size": 0},
        {"id": "actor", "type": "string", "size": 64, "redact": None},
        {"id": "amount", "type": "integer", "size": 0},
    ]
    stub.script("/v1/schema", Reply(200, envelope("Success", {"fields": fields}, "prq_z")))
    h = await make()
    got = await h.sink.fetch_schema()
    assert [(f.id, f.size) for f in got] == [("message", None), ("actor", 64), ("amount", None)]


async def test_fetch_schema_raises_a_config_error_for_an_ambiguous_config_id(stub: UpstreamStub, make: Any) -> None:
    from gateway.errors import UpstreamConfigError

    stub.script("/v1/schema", Reply(400, envelope("AmbiguousConfigID", {}, "prq_a", "which one?")))
    h = await make()
    with pytest.raises(UpstreamConfigError, match="AmbiguousConfigID"):
        await h.sink.fetch_schema()


async def test_fetch_schema_reads_a_custom_schema_from_the_local_audit_log(tmp_path: Any) -> None:
    from gateway.local_audit.server import LocalAuditServer
    from gateway.local_audit.settings import AuditConfigSettings, LocalAuditSettings

    cid = "pci_" + "c" * 32
    schema = {"fields": [{"id": "message", "type": "text", "required": True}, {"id": "amount", "type": "integer"}]}
    config = AuditConfigSettings.model_validate({"id": cid, "schema": schema})
    server = LocalAuditServer(LocalAuditSettings(db_path=tmp_path / "audit.db", listen_port=0, configs=[config]))
    await server.start()
    try:
        h = await local_sink(server, config_id=cid)
        try:
            got = await h.sink.fetch_schema()
        finally:
            await h.sink.stop()
    finally:
        await server.stop()
    assert [(f.id, f.type, f.required) for f in got] == [("message", "text", True), ("amount", "integer", False)]


# -- robustness ------------------------------------------------------------------------------


async def test_stopping_the_sink_during_a_backoff_resolves_the_batch_errored(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v2/log", Reply(503, envelope("ServiceNotAvailable", {}, "prq_x")))
    in_backoff, release = asyncio.Event(), asyncio.Event()

    async def held(_delay: float) -> None:
        in_backoff.set()
        await release.wait()

    h = await make(sleep=held)
    task = asyncio.create_task(h.sink.send(h.batch(2)))
    await in_backoff.wait()
    await h.sink.stop()
    release.set()
    await task
    assert [h.detail(i) for i in range(2)] == ["sink stopped"] * 2
    assert [h.status(i) for i in range(2)] == [AckStatus.ERRORED] * 2
    assert len(stub.seen("/v2/log")) == 1


async def test_events_are_errored_not_lost_when_the_dead_letter_store_fails(stub: UpstreamStub, make: Any) -> None:
    class BrokenStore(RecordingDeadLetters):
        async def write(self, letters: list[Any]) -> None:
            raise OSError("disk full")

    stub.script("/v2/log", validation([{"code": "InvalidString", "detail": "x", "source": "/events/0/event"}]))
    h = await make(deadletters=BrokenStore())
    await h.sink.send(h.batch(2))
    assert [h.status(i) for i in range(2)] == [AckStatus.ERRORED, AckStatus.DELIVERED]


INVALID_200S = [
    Reply(200, b"<html>it works</html>"),  # a web server at a wrong URL
    Reply(200, b"{}"),
    Reply(200, envelope("Success", {"results": []}, "prq_none")),
    Reply(200, envelope("Success", {"results": [{"hash": "a" * 64}]}, "prq_one")),  # one for two events
    Reply(200, envelope("Success", {"results": [1, 2]}, "prq_ints")),
    Reply(200, envelope("Accepted", {"results": [{}, {}]}, "prq_status")),
    Reply(200, b"x" * (3 << 20)),  # junk far over the read bound
]


async def test_a_200_that_is_not_a_success_envelope_with_one_result_per_event_is_retried_as_invalid_answer(
    stub: UpstreamStub, make: Any
) -> None:
    stub.script("/v2/log", *INVALID_200S)
    h = await make()
    await h.sink.send(h.batch(2))
    assert [h.status(i) for i in range(2)] == [AckStatus.DELIVERED] * 2
    sent = stub.seen("/v2/log")
    assert len(sent) == len(INVALID_200S) + 1  # each invalid answer retried; the real one stored them
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="invalid_answer") == len(INVALID_200S)
    assert h.dead.letters == []
    # Retries name the attempts the upstream may have stored, for it to de-duplicate.
    assert sent[-1].headers["X-Pangea-Retried-Request-Ids"] == "prq_none,prq_one,prq_ints,prq_status"
    assert h.detail(0) == {"hash": hashes_of(sent[-1])[0]}


async def test_a_polled_200_that_is_not_a_success_envelope_is_retried_as_invalid_answer(
    stub: UpstreamStub, make: Any
) -> None:
    def accepted_then_garbage(seen: Seen) -> Reply:
        stub.script("/request/prq_garbage", Reply(200, b"{}"))
        accepted = {"location": "/request/prq_garbage", "retry_counter": 0, "ttl_mins": 5760}
        return Reply(202, envelope("Accepted", accepted, "prq_garbage"))

    stub.script("/v2/log_async", accepted_then_garbage)
    h = await make(endpoint="log_async")
    await h.sink.send(h.batch(2))
    assert [h.status(i) for i in range(2)] == [AckStatus.DELIVERED] * 2
    sends = stub.seen("/v2/log_async")
    assert len(sends) == 2 and sends[1].headers["X-Pangea-Retried-Request-Ids"] == "prq_garbage"
    assert h.counter("gateway_upstream_retries_total", destination=DEST, reason="invalid_answer") == 1


async def test_fetch_schema_polls_a_202_through_the_one_poll_loop(stub: UpstreamStub, make: Any) -> None:
    fields = [{"id": "message", "type": "text", "required": True}, {"id": "actor", "type": "string", "size": 32}]
    accepted = envelope("Accepted", {"location": "/request/prq_schema"}, "prq_schema")
    stub.script("/v1/schema", Reply(202, accepted))
    stub.script(
        "/request/prq_schema", Reply(202, accepted), Reply(200, envelope("Success", {"fields": fields}, "prq_sch"))
    )
    h = await make()
    got = await h.sink.fetch_schema()
    assert [(f.id, f.size) for f in got] == [("message", None), ("actor", 32)]
    assert [r.path for r in stub.requests] == ["/v1/schema", "/request/prq_schema", "/request/prq_schema"]
    assert h.sleep.delays == [0.01, 0.02]
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="pending") == 1
    assert h.counter("gateway_upstream_polls_total", destination=DEST, outcome="done") == 1


async def test_a_200_without_a_schema_is_retried_by_fetch_schema(stub: UpstreamStub, make: Any) -> None:
    stub.script("/v1/schema", Reply(200, b"<html>it works</html>"), Reply(200, b"{}"))
    h = await make()
    fields = await h.sink.fetch_schema()
    assert [f.id for f in fields] == ["message"]
    assert len(stub.seen("/v1/schema")) == 3


class _OffsetLog(AckLog):
    """A receiver like a Kafka partition's: it keeps nothing of a delivered event's hash."""

    wants_delivery_details = False


async def test_receivers_that_keep_no_hashes_are_resolved_without_reading_the_answer(
    stub: UpstreamStub, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Results that are objects but not dicts of hashes: checked by count, never read.
    stub.script("/v2/log", Reply(200, envelope("Success", {"results": [{"odd": 1}, {}, {}]}, "prq_lazy")))
    h = await make()
    offsets = _OffsetLog()
    batch = Batch(DEST, [Event(b'{"event":{"message":"m%d"}}' % i, Ack(offsets, i), "kafka") for i in range(3)])
    with caplog.at_level(logging.WARNING):
        await h.sink.send(batch)
    assert offsets.by_key == {i: (AckStatus.DELIVERED, None) for i in range(3)}
    assert h.counter("gateway_events_forwarded_total", destination=DEST) == 3
    assert len(stub.seen("/v2/log")) == 1
    assert not caplog.records


async def test_a_batch_mixing_receivers_gives_the_hashes_to_the_one_keeping_them(stub: UpstreamStub, make: Any) -> None:
    h = await make()
    offsets = _OffsetLog()
    events = [Event(b'{"event":{"message":"kafka"}}', Ack(offsets, 0), "kafka")]
    events += [Event(b'{"event":{"message":"sdk"}}', Ack(h.acks, 0), "sdk")]
    await h.sink.send(Batch(DEST, events))
    [req] = stub.seen("/v2/log")
    _, sdk_hash = hashes_of(req)
    assert h.detail(0) == {"hash": sdk_hash}
    assert offsets.by_key[0][0] is AckStatus.DELIVERED


# -- the running gateway hands the configured poll policy to the delivery driver --------------


async def test_a_202_that_never_finishes_is_given_up_at_the_configured_poll_deadline_and_resent(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    stub.polls_before_done = 1_000_000  # the first request is never done
    stub.script(
        "/v2/log_async",
        lambda seen: None,  # 202, polled forever
        lambda seen: Reply(200, envelope("Success", {"results": [{"hash": "e" * 64}]}, "prq_resent")),
    )
    # A deadline far below the default (300 s): a driver not given the policy would still be polling.
    poll = {"initial_delay_secs": 0.01, "max_delay_secs": 0.01, "deadline_secs": 0.1}
    config = {
        "upstream": {"url": stub.base_url, "token": TOKEN, "endpoint": "log_async", "poll": poll},
        "destinations": {"default": {"batch": {"timeout_secs": 0.01}}},
        "sources": {"app": {"type": "webhook", "format": "json", "path": "/app", "destination": "default"}},
    }
    path = tmp_path / "gateway.yaml"
    path.write_bytes(orjson.dumps(config))
    options = RunOptions(listen="127.0.0.1:0", admin_listen="127.0.0.1:0", data_dir=tmp_path / "data")
    gw = Gateway(load_config(path), options)
    await gw.start()
    try:
        url = f"http://127.0.0.1:{gw.intake_port}/app"
        async with aiohttp.ClientSession() as s, s.post(url, json={"message": "m", "actor": "a"}) as r:
            status = r.status
    finally:
        await gw.stop()
    assert status == 200
    _first, second = stub.seen("/v2/log_async")
    polled = {r.path for r in stub.requests if r.path.startswith("/request/")}
    assert len(polled) == 1  # the accepted request, given up on and named in the resend
    assert second.headers["X-Pangea-Retried-Request-Ids"] == polled.pop().rsplit("/", 1)[1]
