"""fetch_schema against a real HTTP server on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.errors import RetriableUpstreamError, UpstreamConfigError, UpstreamError
from gateway.normalize.fetch import fetch_schema
from gateway.normalize.schema import Schema
from gateway.sinks.pangea.config import PollConfig

FAST_POLL = PollConfig(initial_delay_secs=0.01, max_delay_secs=0.05, deadline_secs=10)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SCHEMA_RESULT = {
    "client_signable": True,
    "tamper_proofing": True,
    "save_malformed": "reject",
    "fields": [
        {"id": "message", "name": "Message", "type": "text", "required": True, "size": 32766, "redact": True,
         "ui_default_visible": True},
        {"id": "actor", "type": "string", "size": 128, "required": False},
        {"id": "count", "type": "integer", "size": 0, "description": "how many"},
        {"id": "at", "type": "datetime", "partitioned": True},
    ],
}  # fmt: skip


def envelope(status: str, result: Any, request_id: str = "prq_1") -> dict[str, Any]:
    return {"request_id": request_id, "request_time": "t", "response_time": "t", "status": status,
            "summary": status, "result": result}  # fmt: skip


class Upstream:
    """A loopback server whose /v1/schema and /request/{id} answers the test sets."""

    def __init__(self) -> None:
        self.schema_handler: Handler | None = None
        self.poll_handler: Handler | None = None
        self.seen: list[tuple[str, str, Any, str | None]] = []
        self.url = ""

    async def _schema(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((request.method, request.path, body, request.headers.get("Authorization")))
        assert self.schema_handler is not None
        return await self.schema_handler(request)

    async def _poll(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, None, request.headers.get("Authorization")))
        assert self.poll_handler is not None
        return await self.poll_handler(request)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    app = web.Application()
    app.router.add_post("/v1/schema", up._schema)
    app.router.add_get("/request/{rid}", up._poll)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    up.url = f"http://127.0.0.1:{port}"
    try:
        yield up
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers)

    return handler


async def test_schema_fields_are_fetched_and_usable(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    upstream.schema_handler = answer(200, envelope("Success", SCHEMA_RESULT))
    fields = await fetch_schema(session, upstream.url + "/", "Bearer pts_x", "pci_123")
    assert upstream.seen == [("POST", "/v1/schema", {"config_id": "pci_123"}, "Bearer pts_x")]
    assert [(f.id, f.type, f.required, f.size, f.redact) for f in fields] == [
        ("message", "text", True, 32766, True),
        ("actor", "string", False, 128, False),
        ("count", "integer", False, None, False),
        ("at", "datetime", False, None, False),
    ]
    schema = Schema.from_fields(fields)
    assert schema.normalize({"message": "m", "count": "3", "at": 0}) == {
        "message": "m", "count": 3, "at": "1970-01-01T00:00:00.000000Z"
    }  # fmt: skip


async def test_without_config_id_the_body_is_empty(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    upstream.schema_handler = answer(200, envelope("Success", SCHEMA_RESULT))
    await fetch_schema(session, upstream.url, "Bearer t", None)
    assert upstream.seen[0][2] == {}


@pytest.mark.parametrize("with_location", [True, False])
async def test_a_202_is_polled_until_the_result_is_ready(
    upstream: Upstream, session: aiohttp.ClientSession, with_location: bool
) -> None:
    accepted = {"location": f"{upstream.url}/request/prq_slow", "retry_counter": 0, "ttl_mins": 5}
    if not with_location:
        del accepted["location"]  # the SDK's /request/{request_id}
    upstream.schema_handler = answer(202, envelope("Accepted", accepted, "prq_slow"))
    polls = 0

    async def poll(request: web.Request) -> web.StreamResponse:
        nonlocal polls
        polls += 1
        if polls < 2:
            return web.json_response(envelope("Accepted", {}, "prq_slow"), status=202)
        return web.json_response(envelope("Success", SCHEMA_RESULT, "prq_slow"))

    upstream.poll_handler = poll
    fields = await fetch_schema(session, upstream.url, "Bearer t", None, poll=FAST_POLL)
    assert len(fields) == 4
    assert [s[:2] for s in upstream.seen] == [("POST", "/v1/schema"), ("GET", "/request/prq_slow"),
                                              ("GET", "/request/prq_slow")]  # fmt: skip
    assert all(s[3] == "Bearer t" for s in upstream.seen)


async def test_polling_gives_up_at_the_deadline(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    upstream.schema_handler = answer(202, envelope("Accepted", {}, "prq_stuck"))
    upstream.poll_handler = answer(202, envelope("Accepted", {}, "prq_stuck"))
    with pytest.raises(RetriableUpstreamError):
        await fetch_schema(
            session, upstream.url, "Bearer t", None, poll=PollConfig(initial_delay_secs=0.05, deadline_secs=0.5)
        )


@pytest.mark.parametrize(
    ("status", "pangea_status", "error"),
    [
        (401, "Unauthorized", UpstreamConfigError),
        (400, "MissingConfigID", UpstreamConfigError),
        (400, "AmbiguousConfigID", UpstreamConfigError),
        (400, "ValidationError", UpstreamConfigError),
        (501, "NotImplemented", UpstreamConfigError),
        (429, "TooManyRequests", RetriableUpstreamError),
        (503, "ServiceNotAvailable", RetriableUpstreamError),
        (500, "InternalError", RetriableUpstreamError),
        (408, "Timeout", RetriableUpstreamError),
    ],
)
async def test_failures_raise_the_gateway_error_tree(
    upstream: Upstream, session: aiohttp.ClientSession, status: int, pangea_status: str, error: type[UpstreamError]
) -> None:
    upstream.schema_handler = answer(status, envelope(pangea_status, {}), {"Retry-After": "7"})
    with pytest.raises(error) as info:
        await fetch_schema(session, upstream.url, "Bearer t", "pci_1")
    assert type(info.value) is error
    assert info.value.http_status == status
    assert info.value.pangea_status == pangea_status
    assert info.value.retriable is (error is RetriableUpstreamError)
    if error is RetriableUpstreamError:
        assert info.value.retry_after_secs == 7.0


@pytest.mark.parametrize(
    "body",
    [
        envelope("Success", {"fields": []}),
        envelope("Success", {}),
        envelope("Success", {"fields": [{"id": "Bad-Id", "type": "string"}]}),
        envelope("Success", {"fields": [{"id": "x", "type": "float"}]}),
        envelope("Success", {"fields": ["x"]}),
        ["not", "an", "envelope"],
    ],
)
async def test_answers_that_are_not_a_schema_are_upstream_errors(
    upstream: Upstream, session: aiohttp.ClientSession, body: Any
) -> None:
    upstream.schema_handler = answer(200, body)
    with pytest.raises(UpstreamError) as info:
        await fetch_schema(session, upstream.url, "Bearer t", None)
    assert not info.value.retriable


async def test_non_json_answer_is_an_upstream_error(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>proxy</html>", content_type="text/html")

    upstream.schema_handler = html
    with pytest.raises(UpstreamError):
        await fetch_schema(session, upstream.url, "Bearer t", None)


async def test_unreachable_upstream_is_retriable(session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetriableUpstreamError):
        await fetch_schema(session, f"http://127.0.0.1:{port}", "Bearer t", None, timeout_secs=5)


async def test_a_request_the_upstream_lost_is_retriable(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    upstream.schema_handler = answer(202, envelope("Accepted", {}, "prq_gone"))
    upstream.poll_handler = answer(404, envelope("NotFound", {}, "prq_gone"))
    with pytest.raises(RetriableUpstreamError):
        await fetch_schema(session, upstream.url, "Bearer t", None, poll=FAST_POLL)
