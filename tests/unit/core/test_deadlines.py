"""Deadlines of one duration on one timer (:mod:`gateway.deadlines`), and the intake's cap on a
request built on them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.deadlines import _COMPACT_AT, deadlines
from gateway.sources.webhook.source import WebhookServer


async def test_deadlines_fire_in_order_once_their_duration_passed_and_cancelled_ones_never() -> None:
    fired: list[int] = []
    d = deadlines(0.05)
    marks = [d.add(fired.append, i) for i in range(5)]
    marks[1].cancel()
    marks[3].cancel()
    for _ in range(3):
        await asyncio.sleep(0)  # a few turns of the loop: not before the duration
    assert fired == []
    await asyncio.sleep(0.2)
    assert fired == [0, 2, 4]
    assert [m.fired for m in marks] == [True, False, True, False, True]
    marks[0].cancel()  # after it fired: nothing happens
    assert deadlines(0.05) is d and deadlines(0.03) is not d  # one queue per duration and loop


async def test_one_slow_request_does_not_keep_every_finished_one_behind_it() -> None:
    d = deadlines(60)
    slow = d.add(print, "slow")
    for _ in range(3 * _COMPACT_AT):
        d.add(print, "fast").cancel()
    assert len(d._queue) < _COMPACT_AT  # compacted: the finished ones are dropped
    assert d._queue[0] is slow and slow.live
    slow.cancel()


async def test_a_request_over_the_intake_cap_is_answered_408_and_the_server_serves_on() -> None:
    server = WebhookServer("127.0.0.1", 0, [], client_max_size=1024)
    server._cap_secs = 0.05  # the cap: body timeout + the longest ack wait + 30 s, made short

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    async def quick(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    server.app.router.add_get("/slow", slow)
    server.app.router.add_get("/quick", quick)
    async with TestClient(TestServer(server.app)) as client:
        resp = await client.get("/slow")
        body: Any = await resp.json()
        assert resp.status == 408 and body["status"] == "ValidationError"
        assert body["summary"] == "request took too long"
        resp = await client.get("/quick")
        assert resp.status == 200 and await resp.text() == "ok"
    assert server._inflight == 0
