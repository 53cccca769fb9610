"""The Audit API's read and management calls through the gateway, passed to the upstream (issue 14).

An app that points pangea-sdk at its sidecar logs through the pipeline (``pangea_api``) and
reads through here: ``/v1/search``, ``/v1/results``, ``/v1/root``, ``/v1/export``,
``/v1/download_results``, ``/v1/schema``, ``/v1beta/config*`` and ``GET /request/{id}`` of
those.  Each call is sent to the destination's upstream with the gateway's own credential
(built here from the upstream settings by :func:`~gateway.sinks.pangea.auth.credentials_from_config`,
not borrowed from the sink), and the upstream's answer is streamed back unchanged: status,
body (``request_id`` included) and the headers a client reads (``Content-Type``,
``Content-Disposition``, ``Retry-After``, ``X-Request-Id``).

Memory is bounded: the request body is read within the source's ``max_body_bytes``; the answer
is copied in chunks, never held whole.  Each call has the upstream's ``timeout_secs`` for its
connection and for each read.  Idempotent calls (:data:`IDEMPOTENT`) that fail retriably, as
the sink's own classifier (:func:`gateway.delivery.retry.classify`) decides, are sent again
up to :data:`MAX_ATTEMPTS` times with its backoff and ``X-Pangea-Retried-Request-Ids``; others
(an export, a configuration change) are sent once and their answer, whatever it is, returned.

A body's ``config_id`` must name a destination's configuration: the gateway's credential may
reach more configurations than the gateway was set up to serve, and a read through the gateway
must not reach further than a write through it (``403 MissingConfigIDScope``).  A call that
names none is sent for the source's destination, with its ``config_id`` added.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web

from gateway.delivery.retry import Verdict, backoff_secs, classify, parse_retry_after
from gateway.sinks.pangea.auth import Credentials, credentials_from_config
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sinks.pangea.request_builder import join_url, request_headers
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = [
    "CONFIG_SCOPED",
    "IDEMPOTENT",
    "MAX_ATTEMPTS",
    "PROXIED_PATHS",
    "ReadProxy",
    "config_id_of",
    "with_config_id",
]

IDEMPOTENT: Final = frozenset(
    {
        "/v1/search",
        "/v1/results",
        "/v1/root",
        "/v1/download_results",
        "/v1/schema",
        "/v1beta/config",
        "/v1beta/config/list",
    }
)
"""Calls that change nothing upstream: safe to send again after a retriable failure."""
PROXIED_PATHS: Final = (
    *sorted(IDEMPOTENT),
    "/v1/export",
    "/v1beta/config/create",
    "/v1beta/config/update",
    "/v1beta/config/delete",
)
"""Every POST route passed through (besides ``GET /request/{id}``)."""
CONFIG_SCOPED: Final = frozenset({"/v1/search", "/v1/root", "/v1/export", "/v1/schema"})
"""Calls whose body names the configuration they read (``config_id``)."""
MAX_ATTEMPTS: Final = 3
"""Attempts of an idempotent call: the app waits on it, and the SDK retries a 5xx itself too."""
_CHUNK: Final = 64 * 1024
_PROBE_MAX: Final = 256 * 1024
_PASSED_HEADERS: Final = ("Content-Type", "Content-Disposition", "Retry-After", "X-Request-Id")


class ReadProxy:
    """Sends read and management calls to one upstream and streams the answers back."""

    def __init__(self, upstream: UpstreamConfig, metrics: Metrics) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._credentials: Credentials | None = None

    def _client(self) -> tuple[aiohttp.ClientSession, Credentials]:
        """The HTTP session and credentials, made on first use (inside the running loop)."""
        if self._session is None or self._session.closed:
            t = self.upstream.timeout_secs
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.upstream.verify_tls),
                # No total: a download may stream for long; each connect and read is bounded.
                timeout=aiohttp.ClientTimeout(total=None, connect=t, sock_read=t),
                auto_decompress=False,
            )
            self._credentials = credentials_from_config(self.upstream, self._session, self.metrics)
        assert self._credentials is not None
        return self._session, self._credentials

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(
        self,
        request: web.Request,
        method: str,
        path: str,
        body: bytes | None,
        *,
        idempotent: bool,
        authorization: str | None = None,
        retried_ids: Sequence[str] = (),
    ) -> web.StreamResponse:
        """Send ``method path`` with ``body`` upstream; stream its answer to ``request``.

        ``authorization``: the header to send (a caller's own token); None sends the gateway's.
        Raises :class:`aiohttp.ClientError` / :class:`TimeoutError` when no answer came at all.
        """
        session, credentials = self._client()
        url = join_url(self.upstream.url, path)
        retry = self.upstream.retry
        attempts = MAX_ATTEMPTS if idempotent else 1
        ids = list(retried_ids)
        for attempt in range(attempts):
            auth = authorization if authorization is not None else await credentials.authorization()
            headers = request_headers(auth, ids, json_body=body is not None)
            last = attempt == attempts - 1
            try:
                resp = await session.request(method, url, data=body, headers=headers)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if last or classify(None, exc) is not Verdict.RETRY:
                    raise
                await asyncio.sleep(backoff_secs(attempt, retry.initial_backoff_secs, retry.max_backoff_secs))
                continue
            try:
                self.metrics.upstream_requests.labels(path.strip("/"), str(resp.status)).inc()
                if resp.status >= 400 and not last and classify(resp.status, None) is Verdict.RETRY:
                    rid = resp.headers.get("X-Request-Id")
                    if rid:
                        ids.append(rid)
                    wait = parse_retry_after(resp.headers.get("Retry-After"))
                    delay = backoff_secs(
                        attempt,
                        retry.initial_backoff_secs,
                        retry.max_backoff_secs,
                        min(wait or 0.0, retry.max_backoff_secs),
                    )
                    await asyncio.sleep(delay)
                    continue
                return await _stream_back(request, resp)
            finally:
                resp.release()
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    async def probe(self, path: str, body: bytes, authorization: str) -> tuple[int, str, str]:
        """One small call for the gateway itself (not streamed): (HTTP status, Pangea status, summary).

        Raises :class:`aiohttp.ClientError` / :class:`TimeoutError` when no answer came.
        """
        session, _ = self._client()
        headers = request_headers(authorization, (), json_body=True)
        async with session.post(join_url(self.upstream.url, path), data=body, headers=headers) as resp:
            raw = await resp.content.read(_PROBE_MAX)
            self.metrics.upstream_requests.labels(path.strip("/"), str(resp.status)).inc()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            return resp.status, "", ""
        status, summary = parsed.get("status"), parsed.get("summary")
        return resp.status, status if isinstance(status, str) else "", summary if isinstance(summary, str) else ""


async def _stream_back(request: web.Request, resp: aiohttp.ClientResponse) -> web.StreamResponse:
    out = web.StreamResponse(status=resp.status, reason=resp.reason)
    for name in _PASSED_HEADERS:
        value = resp.headers.get(name)
        if value is not None:
            out.headers[name] = value
    if resp.headers.get("Content-Encoding"):
        out.headers["Content-Encoding"] = resp.headers["Content-Encoding"]
    if resp.content_length is not None:
        out.content_length = resp.content_length
    await out.prepare(request)
    async for chunk in resp.content.iter_chunked(_CHUNK):
        await out.write(chunk)
    await out.write_eof()
    return out


def config_id_of(body: bytes) -> tuple[bool, Any]:
    """(whether ``body`` is a JSON object, its ``config_id`` member or None)."""
    try:
        parsed: Any = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        return False, None
    if not isinstance(parsed, dict):
        return False, None
    return True, parsed.get("config_id")


def with_config_id(body: bytes, config_id: str) -> bytes:
    """``body`` (a JSON object, possibly empty) with ``config_id`` set."""
    parsed: dict[str, Any] = orjson.loads(body) if body.strip() else {}
    parsed["config_id"] = config_id
    return orjson.dumps(parsed)
