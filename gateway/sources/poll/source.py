"""Pull sources: read a vendor's log API page by page, deliver, then move a durable cursor.

Each vendor follows its own paging contract:

``okta_system_log``
    ``GET /api/v1/logs?sortOrder=ASCENDING&limit=N[&since=T]`` with ``Authorization: SSWS``; then
    always the ``Link: <...>; rel="next"`` header (polling never ends: an empty page still links
    to the next poll).  Limits: ``X-Rate-Limit-Remaining/-Reset`` (epoch seconds), ``429``.
``auth0_logs``
    checkpoints: ``GET /api/v2/logs?take=N[&from=<log_id>]`` with a Bearer token; then ``Link
    rel="next"`` (an empty page links to itself).  Limits: ``x-ratelimit-*``, ``429``.
``github_audit_log``
    ``GET /enterprises/<e>/audit-log?order=asc&per_page=N[&phrase=created:>=T]`` with a Bearer
    token; then the ``rel="next"`` member of the one ``link`` header (none at the end: the last
    page is asked again later).  Limits: ``x-ratelimit-*``, ``Retry-After``, ``403``/``429``.
``onepassword_audit_events``
    ``POST /api/v2/auditevents`` with a Bearer token and ``{"limit": N[, "start_time": T]}``, then
    ``{"cursor": <the page's cursor>}``; more follows at once while ``has_more``.  Limits:
    ``Retry-After``/``429`` (the Events API's own limits were not verified).

The rules an audit trail needs: a page's events are admitted and their acks awaited; only when
every one is resolved (delivered, or refused for good and dead-lettered) is the cursor (the next
page's URL, or 1Password's cursor) written to ``<data-dir>/poll/<source>.cursor.json``
(atomically).  A crash re-reads at most the page in flight, whose delivered events the dedup
window drops by the vendor's event id.  A page
that cannot be read (not JSON, not an array, too deep or large, a next link to another origin)
is reported in ``gateway_poll_errors_total`` and ``/readyz`` and asked again, never skipped.  A
``429`` (or GitHub's ``403`` with a limit exhausted) waits ``Retry-After``, else until the reset
header, at most ``max_wait_secs``; ``Remaining: 0`` on a good answer waits for the reset before
the next request.  ``gateway_poll_lag_seconds`` is the age of the newest delivered event (0 once
a poll finds nothing new).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
import yarl

from gateway.acks import AckStatus
from gateway.errors import GatewayError
from gateway.normalize.limits import check_depth
from gateway.normalize.schema import EventInvalid
from gateway.normalize.vendors import auth0, okta, onepassword, splunk_hec
from gateway.sources.intake import Admitter, Candidate
from gateway.sources.poll.config import PollSourceConfig

log = logging.getLogger(__name__)

MAX_DEPTH = 64
_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+)*)")
_REL = re.compile(r'rel\s*=\s*"?([^";]+)"?')


class PollError(GatewayError):
    """A poll that did not get (or could not use) a page; ``reason`` labels the metric."""

    retriable = True

    def __init__(self, reason: str, message: str, retry_after_secs: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_secs = retry_after_secs


@dataclass(frozen=True)
class VendorApi:
    """One vendor's log API: its first URL, auth header, and how a record maps.

    ``cursor_body`` is set for an API paged by a cursor in a POSTed body (1Password): it builds
    the body from the stored cursor (None: the first request); link-paged APIs store the URL.
    """

    auth_scheme: str
    first_url: Callable[[PollSourceConfig], str]
    to_event: Callable[[Any], tuple[dict[str, Any], str | None]]
    event_time: Callable[[Any], float | None]
    headers: tuple[tuple[str, str], ...] = (("Accept", "application/json"),)
    cursor_body: Callable[[PollSourceConfig, str | None], dict[str, Any]] | None = None


def _rfc3339(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _epoch_ms(value: Any) -> float | None:
    return value / 1000 if isinstance(value, int | float) and not isinstance(value, bool) else None


def _query(params: list[tuple[str, str | None]]) -> str:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in params if v is not None)


def _okta_first(c: PollSourceConfig) -> str:
    # A polling request: `since`, ascending, no `until` (the vendor's documented order of keys).
    return f"{c.url}/api/v1/logs?" + _query(
        [("since", c.since), ("sortOrder", "ASCENDING"), ("limit", str(c.page_size))]
    )


def _auth0_first(c: PollSourceConfig) -> str:
    # Checkpoint mode: only this first URL is built; `from` is a log_id.
    return f"{c.url}/api/v2/logs?" + _query([("from", c.since), ("take", str(min(c.page_size, 100)))])


def _github_first(c: PollSourceConfig) -> str:
    phrase = f"created:>={c.since}" if c.since else None
    enterprise = quote(c.enterprise or "", safe="")
    query = _query([("phrase", phrase), ("order", "asc"), ("per_page", str(min(c.page_size, 100)))])
    return f"{c.url}/enterprises/{enterprise}/audit-log?{query}"


def _onepassword_body(c: PollSourceConfig, cursor: str | None) -> dict[str, Any]:
    if cursor is not None:
        return {"cursor": cursor}
    body: dict[str, Any] = {"limit": c.page_size}
    if c.since:
        body["start_time"] = c.since
    return body


def _auth0_event(record: Any) -> tuple[dict[str, Any], str | None]:
    # A Management API log is the `data` of a log-stream record: one mapping for both.
    if not isinstance(record, dict):
        return auth0.to_event(record)
    return auth0.to_event({"log_id": record.get("log_id") or record.get("_id"), "data": record})


def _github_event(record: Any) -> tuple[dict[str, Any], str | None]:
    # The audit-log API's records are those GitHub streams to Splunk: one mapping for both.
    if not isinstance(record, dict) or not isinstance(record.get("action"), str):
        raise EventInvalid([{"code": "InvalidObject", "detail": "an audit-log record needs an `action`", "source": ""}])
    return splunk_hec.to_event({"event": record})


VENDOR_APIS: dict[str, VendorApi] = {
    "okta_system_log": VendorApi("SSWS", _okta_first, okta.to_event, lambda r: _rfc3339(r.get("published"))),
    "auth0_logs": VendorApi("Bearer", _auth0_first, _auth0_event, lambda r: _rfc3339(r.get("date"))),
    "github_audit_log": VendorApi(
        "Bearer",
        _github_first,
        _github_event,
        lambda r: _epoch_ms(r.get("@timestamp")),
        (("Accept", "application/vnd.github+json"), ("X-GitHub-Api-Version", "2022-11-28")),
    ),
    "onepassword_audit_events": VendorApi(
        "Bearer",
        lambda c: f"{c.url}/api/v2/auditevents",
        onepassword.to_event,
        lambda r: _rfc3339(r.get("timestamp")),
        cursor_body=_onepassword_body,
    ),
}


def next_link(values: list[str]) -> str | None:
    """The ``rel="next"`` URL of one or more ``Link`` header values, if any."""
    for value in values:
        for m in _LINK.finditer(value):
            rels = _REL.search(m.group(2) or "")
            if rels is not None and "next" in rels.group(1).split():
                return m.group(1).strip()
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    u = urlsplit(url)
    return u.scheme, (u.hostname or "").lower(), u.port


class CursorFile:
    """Where to read next (a URL, or a vendor's cursor), in ``<dir>/<source>.cursor.json``, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> str | None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise GatewayError(f"unreadable poll cursor {self.path}: {exc}") from None
        value = data.get("cursor") if isinstance(data, dict) else None
        return value if isinstance(value, str) and value else None

    def save(self, value: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps({"cursor": value, "saved_at": time.time()}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # The rename itself must survive a power cut: sync the directory too.
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class PollSource:
    """One ``type: poll`` source (see the module docstring)."""

    def __init__(
        self,
        name: str,
        config: PollSourceConfig,
        admitter: Admitter,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.admitter = admitter
        self.api = VENDOR_APIS[config.vendor]
        self.cursor = CursorFile(data_dir / "poll" / f"{name}.cursor.json")
        self.clock = clock
        self._sleep = sleep
        self.metrics = admitter.metrics
        self.last_error: str | None = None
        self.url: str = ""
        self.position: str | None = None
        """1Password's cursor (None: start a feed); link-paged APIs keep their place in ``url``."""
        self._not_before = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._origin = _origin(config.url)

    async def open(self) -> None:
        """Load the cursor (else the vendor's first URL) and open the HTTP session."""
        saved = self.cursor.load()
        if self.api.cursor_body is not None:
            self.url, self.position = self.api.first_url(self.config), saved
        else:
            self.url = saved or self.api.first_url(self.config)
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_secs)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=True)

    async def start(self) -> None:
        await self.open()
        self._task = asyncio.create_task(self.run(), name=f"poll-{self.name}")

    async def stop_accepting(self) -> None:
        self._stop.set()

    async def stop(self, deadline: float) -> None:
        self._stop.set()
        if self._task is not None:
            # A page waiting on its acks finishes (or the cursor stays behind: it is re-read).
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, max(0.0, deadline - asyncio.get_running_loop().time()))
        if self._session is not None:
            await self._session.close()

    def readiness(self) -> str | None:
        """Why this source is not healthy (its last poll's error), or None."""
        return self.last_error

    async def _wait(self, secs: float) -> None:
        if secs <= 0:
            return
        if self._sleep is not None:
            await self._sleep(secs)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), secs)

    async def run(self) -> None:
        """Poll until stopped: pages back to back while there are more, then every ``interval_secs``."""
        while not self._stop.is_set():
            try:
                more = await self.poll_once()
            except PollError as exc:
                self._failed(exc.reason, exc.message)
                await self._wait(
                    exc.retry_after_secs if exc.retry_after_secs is not None else self.config.interval_secs
                )
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._failed("network", f"{type(exc).__name__}: {exc}")
                await self._wait(self.config.interval_secs)
                continue
            except GatewayError as exc:  # buffer full, shutdown...
                self._failed(type(exc).__name__, exc.message)
                await self._wait(self.config.interval_secs)
                continue
            self.last_error = None
            if not more:
                await self._wait(self.config.interval_secs)

    def _failed(self, reason: str, message: str) -> None:
        self.metrics.poll_errors.labels(self.name, reason).inc()
        self.last_error = f"{reason}: {message}"
        log.warning("poll failed", extra={"source": self.name, "reason": reason, "error": message})

    def _limits(self, status: int, headers: Any) -> float | None:
        """Seconds to wait before the next request per the rate-limit headers (None: no need)."""
        now = self.clock()
        retry = headers.get("Retry-After")
        if retry is not None and retry.strip().isdigit():
            return min(float(retry.strip()), self.config.max_wait_secs)
        remaining = headers.get("X-Rate-Limit-Remaining") or headers.get("x-ratelimit-remaining")
        reset = headers.get("X-Rate-Limit-Reset") or headers.get("x-ratelimit-reset")
        if (status == 429 or (remaining or "").strip() == "0") and reset and reset.strip().isdigit():
            return min(max(0.0, float(reset.strip()) - now), self.config.max_wait_secs)
        if status == 429:
            return self.config.interval_secs
        return None

    async def _get(self, url: str) -> tuple[int, Any, bytes]:
        assert self._session is not None
        headers = dict(self.api.headers)
        headers["Authorization"] = f"{self.api.auth_scheme} {self.config.token.get_secret_value()}"
        body = None
        if self.api.cursor_body is not None:
            body = orjson.dumps(self.api.cursor_body(self.config, self.position))
            headers["Content-Type"] = "application/json"
        # encoded=True: the URL goes out byte for byte as the vendor wrote it (cursors are opaque).
        async with self._session.request(
            "GET" if body is None else "POST",
            yarl.URL(url, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as resp:
            if resp.content_length is not None and resp.content_length > self.config.max_page_bytes:
                raise PollError("malformed_page", f"page over {self.config.max_page_bytes} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(65536):
                size += len(chunk)
                if size > self.config.max_page_bytes:
                    raise PollError("malformed_page", f"page over {self.config.max_page_bytes} bytes")
                chunks.append(chunk)
            return resp.status, resp.headers, b"".join(chunks)

    async def poll_once(self) -> bool:
        """Read the cursor's page, deliver it, move the cursor; True if the next page may follow at once."""
        wait = self._not_before - self.clock()
        if wait > 0:
            await self._wait(wait)
        url = self.url
        status, headers, body = await self._get(url)
        limit_wait = self._limits(status, headers)
        self._not_before = self.clock() + limit_wait if limit_wait is not None and status < 400 else 0.0
        exhausted = (headers.get("x-ratelimit-remaining") or headers.get("X-Rate-Limit-Remaining") or "").strip() == "0"
        if status == 429 or (status == 403 and (exhausted or "Retry-After" in headers)):
            raise PollError("rate_limited", f"HTTP {status}", limit_wait)
        if status in (401, 403):
            raise PollError("auth", f"HTTP {status}: the token was refused")
        if status != 200:
            raise PollError("http_error", f"HTTP {status}")
        try:
            page = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PollError("malformed_page", f"page is not JSON: {exc}") from None
        if not check_depth(page, MAX_DEPTH):
            raise PollError("malformed_page", f"page nests deeper than {MAX_DEPTH} levels")
        if self.api.cursor_body is not None:
            records, position, more = _cursor_page(page)
        else:
            if not isinstance(page, list):
                raise PollError("malformed_page", f"page is a JSON {type(page).__name__}, not an array of events")
            records = page
            nxt = next_link(headers.getall("Link", []))
            if nxt is not None and _origin(nxt) != self._origin:
                # The token goes with every request: never to a host it was not configured for.
                raise PollError("malformed_page", "next link points to another origin")
            more = bool(records) and nxt is not None and nxt != url

        await self._deliver(records)
        self.metrics.poll_pages.labels(self.name).inc()
        if self.api.cursor_body is not None:
            if position != self.position:
                self.cursor.save(position)
                self.position = position
        elif nxt is not None and nxt != url:
            self.cursor.save(nxt)
            self.url = nxt
        times = [t for t in (self.api.event_time(r) for r in records if isinstance(r, dict)) if t is not None]
        self.metrics.poll_lag.labels(self.name).set(max(0.0, self.clock() - max(times)) if times else 0.0)
        return more

    async def _deliver(self, records: list[Any]) -> None:
        cands: list[Candidate] = []
        for i, record in enumerate(records):
            try:
                fields, dedup = self.api.to_event(record)
            except EventInvalid as exc:
                errors = [{**e, "source": f"/{i}{e.get('source', '')}"} for e in exc.errors]
                cands.append(Candidate(None, f"/{i}", record, errors=errors))
                continue
            cands.append(Candidate(fields, f"/{i}", record, dedup_key=dedup))
        adm = await self.admitter.admit(cands, wait_for_room=True)
        status = await adm.group.wait()
        if status == AckStatus.ERRORED:
            raise PollError("delivery", "the upstream did not take the page's events; the page will be read again")


def _cursor_page(page: Any) -> tuple[list[Any], str, bool]:
    """``(items, cursor, has_more)`` of a 1Password Events API page; anything else is malformed."""
    if not isinstance(page, dict):
        raise PollError("malformed_page", f"page is a JSON {type(page).__name__}, not an object")
    items, cursor, more = page.get("items"), page.get("cursor"), page.get("has_more")
    if not isinstance(items, list) or not isinstance(cursor, str) or not cursor or not isinstance(more, bool):
        raise PollError("malformed_page", 'page needs "items" (array), "cursor" (string) and "has_more" (boolean)')
    return items, cursor, more
