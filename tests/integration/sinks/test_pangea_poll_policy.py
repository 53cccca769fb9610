"""The running gateway polls a 202 by the configured ``upstream.poll`` policy (the driver is given it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from gateway.app import Gateway, RunOptions
from gateway.config import load_config
from tests.integration.sinks.upstream_stub import Reply, UpstreamStub, envelope

TOKEN = "pts_poll_policy_token"


@pytest.fixture
async def stub() -> AsyncIterator[UpstreamStub]:
    s = UpstreamStub(tokens=(TOKEN,))
    await s.start()
    yield s
    await s.stop()


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
