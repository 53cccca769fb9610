"""Upstream credentials: OAuth2 client credentials over real HTTP, token files that rotate."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from gateway.acks import Ack, AckStatus
from gateway.batching import Batch
from gateway.errors import RetriableUpstreamError, UpstreamCredentialsRefused
from gateway.event import Event
from gateway.sinks.pangea.auth import OAuth2ClientCredentials, TokenFile, credentials_from_config
from gateway.sinks.pangea.config import OAuth2Config, UpstreamConfig
from gateway.sinks.pangea.sink import PangeaSink
from gateway.telemetry.metrics import Metrics
from tests.integration.sinks.upstream_stub import (
    CLIENT_ID,
    CLIENT_SECRET,
    AckLog,
    RecordingDeadLetters,
    Reply,
    SleepRecorder,
    UpstreamStub,
)


@pytest.fixture
async def stub() -> AsyncIterator[UpstreamStub]:
    s = UpstreamStub(tokens=())
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def oauth2_config(stub: UpstreamStub, **over: Any) -> OAuth2Config:
    base: dict[str, Any] = {
        "token_url": f"{stub.base_url}/oauth/token",
        "client_id": CLIENT_ID,
        "client_secret": SecretStr(CLIENT_SECRET),
        "scope": "pangea:service:audit:read pangea:service:audit:manage",
    }
    base.update(over)
    return OAuth2Config(**base)


def refreshes(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("gateway_auth_token_refreshes_total", {"reason": reason}) or 0.0


def one_event_batch(acks: AckLog, key: int) -> Batch:
    return Batch("default", [Event(orjson.dumps({"event": {"message": f"m{key}"}}), Ack(acks, key), "sdk")])


# -- OAuth2 client credentials ---------------------------------------------------------------


async def test_token_is_fetched_with_basic_client_auth_and_the_client_credentials_form(
    stub: UpstreamStub, session: aiohttp.ClientSession
) -> None:
    creds = OAuth2ClientCredentials(oauth2_config(stub), session)
    assert await creds.authorization() == "Bearer pts_oauth_1"

    [req] = stub.seen("/oauth/token")
    assert req.method == "POST"
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert req.headers["Authorization"] == f"Basic {basic}"
    assert req.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(req.body.decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["pangea:service:audit:read pangea:service:audit:manage"],
    }


async def test_scope_is_omitted_when_not_configured(stub: UpstreamStub, session: aiohttp.ClientSession) -> None:
    await OAuth2ClientCredentials(oauth2_config(stub, scope=None), session).authorization()
    assert parse_qs(stub.seen("/oauth/token")[0].body.decode()) == {"grant_type": ["client_credentials"]}


async def test_token_is_cached_across_sends(stub: UpstreamStub) -> None:
    metrics, acks = Metrics(), AckLog()
    upstream = UpstreamConfig(url=stub.base_url, oauth2=oauth2_config(stub))
    sink = PangeaSink("default", None, upstream, metrics, RecordingDeadLetters())
    await sink.start()
    try:
        for key in range(3):
            await sink.send(one_event_batch(acks, key))
    finally:
        await sink.stop()
    assert [acks.by_key[k][0] for k in range(3)] == [AckStatus.DELIVERED] * 3
    assert len(stub.seen("/oauth/token")) == 1
    assert {r.headers["Authorization"] for r in stub.seen("/v2/log")} == {"Bearer pts_oauth_1"}
    assert refreshes(metrics, "initial") == 1


async def test_token_is_refreshed_before_it_expires(stub: UpstreamStub, session: aiohttp.ClientSession) -> None:
    stub.expires_in = 100
    clock, metrics = Clock(), Metrics()
    creds = OAuth2ClientCredentials(oauth2_config(stub, refresh_before_expiry_secs=30), session, metrics, clock=clock)
    assert await creds.authorization() == "Bearer pts_oauth_1"
    clock.now += 69  # 31 s left: still outside the refresh window
    assert await creds.authorization() == "Bearer pts_oauth_1"
    clock.now += 2  # 29 s left: refresh early, before the upstream starts refusing it
    assert await creds.authorization() == "Bearer pts_oauth_2"
    assert len(stub.seen("/oauth/token")) == 2
    assert refreshes(metrics, "expiring") == 1


async def test_short_lived_tokens_are_not_fetched_on_every_call(
    stub: UpstreamStub, session: aiohttp.ClientSession
) -> None:
    stub.expires_in = 10  # shorter than the default 60 s refresh margin
    clock = Clock()
    creds = OAuth2ClientCredentials(oauth2_config(stub), session, clock=clock)
    await creds.authorization()
    clock.now += 4
    await creds.authorization()
    assert len(stub.seen("/oauth/token")) == 1
    clock.now += 2  # past half its lifetime
    assert await creds.authorization() == "Bearer pts_oauth_2"


async def test_concurrent_callers_share_one_token_fetch(stub: UpstreamStub, session: aiohttp.ClientSession) -> None:
    import asyncio

    creds = OAuth2ClientCredentials(oauth2_config(stub), session)
    values = await asyncio.gather(*(creds.authorization() for _ in range(20)))
    assert set(values) == {"Bearer pts_oauth_1"}
    assert len(stub.seen("/oauth/token")) == 1


async def test_a_401_makes_the_sink_refresh_the_token_once_and_retry(stub: UpstreamStub) -> None:
    metrics, acks, dead = Metrics(), AckLog(), RecordingDeadLetters()
    upstream = UpstreamConfig(url=stub.base_url, oauth2=oauth2_config(stub))
    sink = PangeaSink("default", None, upstream, metrics, dead, sleep=SleepRecorder())
    await sink.start()
    try:
        await sink.send(one_event_batch(acks, 0))
        stub.revoke_all()  # the upstream forgets the token before it expires
        await sink.send(one_event_batch(acks, 1))
    finally:
        await sink.stop()
    assert [acks.by_key[k][0] for k in range(2)] == [AckStatus.DELIVERED] * 2
    assert [r.headers["Authorization"] for r in stub.seen("/v2/log")] == [
        "Bearer pts_oauth_1",
        "Bearer pts_oauth_1",  # refused with 401
        "Bearer pts_oauth_2",
    ]
    assert len(stub.seen("/oauth/token")) == 2
    assert refreshes(metrics, "invalidated") == 1
    assert dead.letters == []


async def test_refused_client_credentials_are_a_retriable_credentials_refusal_that_names_no_secret(
    stub: UpstreamStub, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "pck_wrong_secret_value"
    creds = OAuth2ClientCredentials(oauth2_config(stub, client_secret=SecretStr(wrong)), session)
    with pytest.raises(UpstreamCredentialsRefused) as info:
        await creds.authorization()
    assert info.value.retriable  # the gateway's own fault: its events wait for a fixed credential
    assert str(info.value) == "OAuth2 token endpoint refused the client: HTTP 401 invalid_client"
    assert wrong not in str(info.value) and wrong not in repr(creds) and wrong not in caplog.text


async def test_failing_token_endpoint_is_retriable_and_the_sink_reports_it(stub: UpstreamStub) -> None:
    stub.script("/oauth/token", *[Reply(503, b"down") for _ in range(10)])
    metrics = Metrics()
    upstream = UpstreamConfig(url=stub.base_url, oauth2=oauth2_config(stub))
    sink = PangeaSink("default", None, upstream, metrics, RecordingDeadLetters())
    await sink.start()
    try:
        reason = await sink.check()
    finally:
        await sink.stop()
    assert reason is not None and "OAuth2 token endpoint failed: HTTP 503" in reason


async def test_refresh_failure_keeps_the_cached_token_until_it_expires(
    stub: UpstreamStub, session: aiohttp.ClientSession
) -> None:
    stub.expires_in = 100
    clock = Clock()
    creds = OAuth2ClientCredentials(oauth2_config(stub, refresh_before_expiry_secs=30), session, clock=clock)
    await creds.authorization()
    stub.script("/oauth/token", Reply(503, b"down"), Reply(503, b"down"))
    clock.now += 80  # in the refresh window, not yet expired
    assert await creds.authorization() == "Bearer pts_oauth_1"
    clock.now += 30  # expired, and the endpoint still down
    with pytest.raises(RetriableUpstreamError):
        await creds.authorization()


# -- token files -----------------------------------------------------------------------------


async def test_token_file_picks_up_a_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("pts_first\n")
    metrics = Metrics()
    creds = TokenFile(path, metrics, min_check_interval_secs=0)
    assert await creds.authorization() == "Bearer pts_first"
    path.write_text("  pts_second_rotated  \n")
    assert await creds.authorization() == "Bearer pts_second_rotated"
    assert refreshes(metrics, "initial") == 1
    assert refreshes(metrics, "file_changed") == 1


async def test_token_file_swapped_by_symlink_like_a_kubernetes_secret(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "token").write_text("pts_v1")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "token").write_text("pts_v2")
    (tmp_path / "..data").symlink_to("v1")
    link = tmp_path / "token"
    link.symlink_to("..data/token")
    creds = TokenFile(link, min_check_interval_secs=0)
    assert await creds.authorization() == "Bearer pts_v1"
    tmp_link = tmp_path / "..data_tmp"
    tmp_link.symlink_to("v2")
    tmp_link.replace(tmp_path / "..data")  # the atomic swap the kubelet does
    assert await creds.authorization() == "Bearer pts_v2"


async def test_missing_or_empty_token_file_is_a_retriable_credentials_refusal(tmp_path: Path) -> None:
    with pytest.raises(UpstreamCredentialsRefused, match="cannot be read"):
        await TokenFile(tmp_path / "absent").authorization()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(UpstreamCredentialsRefused, match="is empty"):
        await TokenFile(empty).authorization()


async def test_sink_with_a_token_file_rereads_it_after_a_401(stub: UpstreamStub, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("pts_old")
    stub.tokens = {"pts_old"}
    metrics, acks = Metrics(), AckLog()
    upstream = UpstreamConfig(url=stub.base_url, token_file=path)
    sink = PangeaSink("default", None, upstream, metrics, RecordingDeadLetters(), sleep=SleepRecorder())
    await sink.start()
    try:
        await sink.send(one_event_batch(acks, 0))
        stub.tokens = {"pts_new_rotated"}  # rotated upstream ...
        path.write_text("pts_new_rotated")  # ... and in the mounted Secret
        await sink.send(one_event_batch(acks, 1))
    finally:
        await sink.stop()
    assert [acks.by_key[k][0] for k in range(2)] == [AckStatus.DELIVERED] * 2
    assert stub.seen("/v2/log")[-1].headers["Authorization"] == "Bearer pts_new_rotated"


def test_credentials_from_config_picks_the_configured_kind(tmp_path: Path) -> None:
    from gateway.sinks.pangea.auth import StaticToken

    metrics = Metrics()
    session: Any = object()  # not used until a token is fetched
    static = credentials_from_config(UpstreamConfig(url="http://x", token=SecretStr("pts_s")), session, metrics)
    assert isinstance(static, StaticToken) and "pts_s" not in repr(static)
    tf = credentials_from_config(UpstreamConfig(url="http://x", token_file=tmp_path / "t"), session, metrics)
    assert isinstance(tf, TokenFile)
    oauth = OAuth2Config(token_url="http://x/t", client_id="c", client_secret=SecretStr("pck_s"))
    o = credentials_from_config(UpstreamConfig(url="http://x", oauth2=oauth), session, metrics)
    assert isinstance(o, OAuth2ClientCredentials) and "pck_s" not in repr(o)
