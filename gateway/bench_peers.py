"""The peers ``audit-gateway bench`` measures the gateway against, each run as its own process.

* ``stub``: a fast upstream.  It answers ``/v2/log`` with a Pangea ``Success`` envelope holding
  one result per event (answers cached by size), so that neither contender waits on a real
  audit log and both are held to the same, valid answer.
* ``bare``: the least correct work a webhook → audit log pipe can do.  An aiohttp server that,
  per request, parses the body, maps each event (Auth0 records with the gateway's own Auth0
  mapper, so that the comparison measures the pipeline and not the mapping; ``/v2/log`` events
  as they are), ``POST``\\s one ``/v2/log`` body upstream and answers ``200`` only after the
  upstream did.  No schema check, no buffer, no dedup, no retries, no metrics.

Run as ``python -m gateway.bench_peers stub PORT_FILE`` or
``python -m gateway.bench_peers bare HOST:PORT UPSTREAM_URL TOKEN``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

_TIME = "2026-01-01T00:00:00.000000Z"


def stub_answer(n: int) -> bytes:
    """The ``/v2/log`` ``Success`` envelope for ``n`` events (one result, with a hash, each)."""
    return orjson.dumps(
        {
            "request_id": "prq_bench",
            "request_time": _TIME,
            "response_time": _TIME,
            "status": "Success",
            "summary": "Logged",
            "result": {"results": [{"hash": "0" * 64}] * n},
        }
    )


def _stub_app() -> web.Application:
    answers: dict[int, bytes] = {}
    state = {"events": 0, "requests": 0}

    async def log(request: web.Request) -> web.Response:
        body = await request.read()
        # Counting the items' keys is enough for a stub: both contenders send compact JSON.
        n = body.count(b'{"event":')
        state["events"] += n
        state["requests"] += 1
        answer = answers.get(n)
        if answer is None:
            answer = answers[n] = stub_answer(n)
        return web.Response(body=answer, content_type="application/json")

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(state)

    async def other(_request: web.Request) -> web.Response:
        return web.json_response({"status": "Success", "request_id": "prq_bench", "summary": "", "result": {}})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v2/log", log)
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


def _bare_app(upstream: str, token: str) -> web.Application:
    from gateway.normalize.vendors import auth0

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    session: dict[str, aiohttp.ClientSession] = {}

    async def forward(events: list[Any]) -> web.Response:
        body = orjson.dumps({"events": [{"event": e} for e in events]})
        async with session["s"].post(upstream + "/v2/log", data=body, headers=headers) as r:
            await r.read()
            status = r.status
        if status != 200:
            return web.json_response({"status": "ProviderError"}, status=502)
        return web.json_response({"status": "Success", "result": {}})

    async def auth0_route(request: web.Request) -> web.Response:
        records = orjson.loads(await request.read())
        if isinstance(records, dict):
            records = records["logs"]
        return await forward([auth0.to_event(r)[0] for r in records])

    async def v2_log(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        return await forward([item["event"] for item in doc["events"]])

    async def on_startup(_app: web.Application) -> None:
        session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

    async def on_cleanup(_app: web.Application) -> None:
        await session["s"].close()

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/log_stream", auth0_route)
    app.router.add_post("/v2/log", v2_log)
    app.router.add_get("/healthz", lambda _r: _ok())
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _ok() -> web.Response:
    return web.Response(text="ok")


async def _serve(app: web.Application, host: str, port: int, port_file: Path | None = None) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    if port_file is not None:
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        port_file.write_text(str(bound))  # noqa: ASYNC240 - once, at start-up
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    """``stub PORT_FILE`` | ``bare HOST:PORT UPSTREAM_URL TOKEN``."""
    with contextlib.suppress(KeyboardInterrupt):
        if argv[0] == "stub":
            asyncio.run(_serve(_stub_app(), "127.0.0.1", 0, Path(argv[1])))
        elif argv[0] == "bare":
            host, _, port = argv[1].rpartition(":")
            asyncio.run(_serve(_bare_app(argv[2], argv[3]), host, int(port)))
        else:
            print(f"unknown peer {argv[0]!r}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
