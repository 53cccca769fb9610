"""A loopback vendor log API for the pull-source tests, built from the recorded exchanges.

Each ``*_exchanges.json`` sample lists requests and the vendor's answers (status, headers in wire
order, body file).  :class:`VendorStub` serves them on 127.0.0.1 with the vendor's host replaced
by its own, so the next links the gateway follows lead back to it: the paging contract (Okta's
separate ``link`` headers, Auth0's self-linking empty page, GitHub's one ``link`` header and its
end without ``rel="next"``) and the rate-limit headers are the vendor's own.  A test can queue
other answers for a URL (a ``429``, a malformed page), hold a URL's answer until released, and
read which URLs were asked and with which ``Authorization``.  A POSTed JSON body (1Password's
cursor requests) is part of what is asked: ``key(url, body)``.

The server runs on its own event loop in a thread, because the gateway under test is a real
process and the test code is synchronous.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.bench import free_port


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class VendorStub:
    """The vendor's API for one exchanges file (see the module docstring)."""

    exchanges_file: Path
    port: int = field(default_factory=free_port)
    answers: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    asked: list[tuple[str, str]] = field(default_factory=list)
    held: dict[str, threading.Event] = field(default_factory=dict)

    def __post_init__(self) -> None:
        doc = json.loads(self.exchanges_file.read_bytes())
        self.exchanges: list[dict[str, Any]] = doc["exchanges"]
        first = urlsplit(self.exchanges[0]["request"]["url"])
        self.vendor_base = f"{first.scheme}://{first.netloc}"
        self.base = f"http://127.0.0.1:{self.port}"
        for ex in self.exchanges:
            if ex["response"]["status"] != 200:
                continue  # error answers are queued by the tests that want them
            req = ex["request"]
            self.answers[self.key(req["url"], req.get("body"))].append(self._answer(ex["response"]))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def key(self, vendor_url: str, body: Any = None) -> str:
        """A request as the stub tells it apart: path and query (the host is the stub's), and the JSON body."""
        u = urlsplit(vendor_url)
        key = u.path + ("?" + u.query if u.query else "")
        return key if body is None else key + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"))

    def url(self, vendor_url: str) -> str:
        return self.base + self.key(vendor_url)

    def _answer(self, response: dict[str, Any]) -> Answer:
        headers = [(k, v.replace(self.vendor_base, self.base)) for k, v in response["headers"]]
        body = (self.exchanges_file.parent / response["body_file"]).read_bytes() if "body_file" in response else b""
        return Answer(response["status"], headers, body)

    def exchange_answer(self, step: int) -> Answer:
        return self._answer(self.exchanges[step - 1]["response"])

    def queue_first(self, vendor_url: str, answer: Answer, body: Any = None) -> None:
        """Answer ``answer`` the next time ``vendor_url`` (with ``body``) is asked (then as before)."""
        self.answers[self.key(vendor_url, body)].insert(0, answer)

    def hold(self, vendor_url: str) -> threading.Event:
        """Keep ``vendor_url``'s next answer until the returned event is set."""
        gate = threading.Event()
        self.held[self.key(vendor_url)] = gate
        return gate

    def count(self, vendor_url: str, body: Any = None) -> int:
        return sum(1 for k, _ in self.asked if k == self.key(vendor_url, body))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = request.raw_path  # as sent, percent-encoding and all
        if request.can_read_body:
            try:
                body = json.loads(await request.read())
            except ValueError:
                return web.Response(status=400, text="body is not JSON")
            key += "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"))
        self.asked.append((key, request.headers.get("Authorization", "")))
        gate = self.held.pop(key, None)
        if gate is not None:
            await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        queue = self.answers.get(key)
        if not queue:
            return web.Response(status=404, text="no such page in the recorded exchanges")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]  # the last answer repeats (a tail page)
        resp = web.Response(status=answer.status, body=answer.body)
        for k, v in answer.headers:
            resp.headers.add(k, v)
        return resp

    def __enter__(self) -> VendorStub:
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="vendor-stub", daemon=True)
        self._thread.start()
        assert started.wait(10), "stub did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        for gate in self.held.values():
            gate.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
