"""A scriptable Pangea-compatible upstream on loopback, for fault injection in sink tests.

Real HTTP on ``127.0.0.1`` port 0.  Without a script each path answers like the upstream
would: ``/v2/log`` stores and returns hashes, ``/v2/log_async`` answers 202 and its result is
served at ``/request/{id}``, ``/v1/schema`` returns the standard schema, ``/oauth/token``
issues bearer tokens for HTTP Basic client credentials.  ``script(path, *replies)`` queues
answers that take precedence, one per call (a callable may return None to defer to the
default answer); every request is recorded in ``requests``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support.http import serve_on_loopback

CLIENT_ID = "psa_stubclient"
CLIENT_SECRET = "pck_stub_secret_value"


@dataclass
class Reply:
    """One scripted answer.  ``drop`` closes the connection without answering."""

    status: int = 200
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


@dataclass
class Seen:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


def envelope(status: str, result: Any, request_id: str, summary: str = "") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "request_time": "2025-01-01T00:00:00.000000Z",
        "response_time": "2025-01-01T00:00:00.000001Z",
        "status": status,
        "summary": summary or status,
        "result": result,
    }


def canonical_hash(item: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()


ScriptItem = Reply | Callable[[Seen], "Reply | None"]


class UpstreamStub:
    """The scriptable upstream.  ``tokens`` are the bearer tokens it accepts."""

    def __init__(self, *, tokens: tuple[str, ...] = ("pts_stub_token",), expires_in: float = 3600) -> None:
        self.tokens: set[str] = set(tokens)
        self.expires_in = expires_in
        self.requests: list[Seen] = []
        self.stored: list[dict[str, Any]] = []
        self.polls_before_done = 1
        self._scripts: dict[str, deque[ScriptItem]] = {}
        self._ids = itertools.count(1)
        self._issued = itertools.count(1)
        self._async: dict[str, tuple[int, dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- control -------------------------------------------------------------------------

    def script(self, path: str, *replies: ScriptItem) -> None:
        self._scripts.setdefault(path, deque()).extend(replies)

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    def next_request_id(self) -> str:
        return f"prq_stub{next(self._ids):04d}"

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.base_url = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- serving -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(request.method, request.path, dict(request.headers), body, asyncio.get_running_loop().time())
        self.requests.append(seen)
        queue = self._scripts.get(request.path)
        reply: Reply | None = None
        if queue:
            item = queue.popleft()
            reply = item(seen) if callable(item) else item
        if reply is None:  # unscripted, or a scripted callable that defers to the default
            reply = self._default(seen)
        if reply.drop:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never written: the connection is gone
        data = orjson.dumps(reply.body) if isinstance(reply.body, dict) else reply.body or b""
        return web.Response(status=reply.status, body=data, headers=reply.headers, content_type="application/json")

    def _authorized(self, seen: Seen) -> bool:
        auth = seen.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[len("Bearer ") :] in self.tokens

    def _default(self, seen: Seen) -> Reply:
        rid = self.next_request_id()
        if seen.path == "/oauth/token":
            return self._token(seen)
        if not self._authorized(seen):
            return Reply(401, envelope("Unauthorized", {}, rid, "Not authorized to access this resource"))
        if seen.path == "/v2/log":
            return Reply(200, envelope("Success", {"results": self._store(seen)}, rid))
        if seen.path == "/v2/log_async":
            results = self._store(seen)
            self._async[rid] = (self.polls_before_done, envelope("Success", {"results": results}, rid))
            accepted = {"location": f"/request/{rid}", "retry_counter": 0, "ttl_mins": 5760}
            return Reply(202, envelope("Accepted", accepted, rid))
        if seen.path.startswith("/request/"):
            pid = seen.path.rsplit("/", 1)[1]
            if pid not in self._async:
                return Reply(404, envelope("NotFound", {}, rid))
            left, final = self._async[pid]
            if left > 0:
                self._async[pid] = (left - 1, final)
                accepted = {"location": f"/request/{pid}", "retry_counter": 1, "ttl_mins": 5760}
                return Reply(202, envelope("Accepted", accepted, pid))
            return Reply(200, final)
        if seen.path == "/v1/schema":
            fields = [{"id": "message", "type": "text", "required": True}]
            return Reply(200, envelope("Success", {"fields": fields}, rid))
        return Reply(404, envelope("NotFound", {}, rid))

    def _store(self, seen: Seen) -> list[dict[str, Any]]:
        doc = seen.json
        out = []
        for item in doc["events"]:
            self.stored.append(item)
            h = canonical_hash(item)
            out.append({"hash": h, "envelope": {"event": item["event"]}} if doc.get("verbose") else {"hash": h})
        return out

    def _token(self, seen: Seen) -> Reply:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if seen.headers.get("Authorization") != expected:
            return Reply(401, {"error": "invalid_client", "error_description": "client authentication failed"})
        token = f"pts_oauth_{next(self._issued)}"
        self.tokens.add(token)
        return Reply(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in, "scope": "audit"}
        )

    def revoke_all(self) -> None:
        """Forget every token issued so far (the next call with one answers 401)."""
        self.tokens = {t for t in self.tokens if not t.startswith("pts_oauth_")}


# -- helpers shared by the sink tests ---------------------------------------------------------


class RecordingDeadLetters:
    """A dead-letter store that keeps what it is given."""

    def __init__(self) -> None:
        self.letters: list[Any] = []

    async def write(self, letters: list[Any]) -> None:
        self.letters.extend(letters)

    async def close(self) -> None:
        return None


class AckLog:
    """An ack receiver recording each event's final status and detail by key."""

    def __init__(self) -> None:
        self.by_key: dict[int, tuple[Any, Any]] = {}
        self.resolutions = 0

    def ack_resolved(self, key: int, status: Any, detail: Any) -> None:
        self.resolutions += 1
        self.by_key[key] = (status, detail)


class SleepRecorder:
    """A stand-in for asyncio.sleep and the monotonic clock: records each requested delay and
    lets that much time pass on :meth:`monotonic` at once, without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.now = 0.0

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += delay
        await asyncio.sleep(0)

    def monotonic(self) -> float:
        return self.now
