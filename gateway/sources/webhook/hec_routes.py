"""Splunk HTTP Event Collector routes, answering as HEC does (``{"text", "code"}``).

``POST <path>`` and ``<path>/event`` take concatenated JSON event objects; ``<path>/raw``
takes one event per line and needs a channel (``X-Splunk-Request-Channel`` or
``?channel=``); ``GET <path>/health`` reports health.  Auth is ``Authorization: Splunk
<token>`` (or HTTP Basic with the token as password, as ``curl -u x:<token>`` sends).
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

import orjson
from aiohttp import web

from gateway.acks import AckStatus
from gateway.errors import BufferFull, IntakeError, PayloadTooLarge
from gateway.normalize.limits import check_depth
from gateway.normalize.schema import EventInvalid
from gateway.normalize.vendors import DecodeError
from gateway.normalize.vendors import splunk_hec as hec
from gateway.sources.intake import Admission, Admitter, Candidate
from gateway.sources.webhook.answers import settle
from gateway.sources.webhook.auth import header_bytes
from gateway.sources.webhook.body import RequestTimeout, read_body
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.telemetry.reasons import Reason

# HEC's own codes and statuses (Splunk docs, "Troubleshoot HTTP Event Collector").
SUCCESS = (200, 0, "Success")
TOKEN_REQUIRED = (401, 2, "Token is required")
INVALID_AUTHORIZATION = (401, 3, "Invalid authorization")
INVALID_TOKEN = (403, 4, "Invalid token")
NO_DATA = (400, 5, "No data")
INVALID_DATA_FORMAT = (400, 6, "Invalid data format")
INTERNAL_ERROR = (500, 8, "Internal server error")
SERVER_BUSY = (503, 9, "Server is busy")
CHANNEL_MISSING = (400, 10, "Data channel is missing")
EVENT_FIELD_REQUIRED = (400, 12, "Event field is required")
EVENT_FIELD_BLANK = (400, 13, "Event field cannot be blank")
REQUEST_TIMEOUT = (408, 6, "Request body not received in time")
HEALTHY = (200, 17, "HEC is healthy")
UNHEALTHY = (503, 18, "HEC is unhealthy, queues are full")
_BY_CODE = {c[1]: c for c in (NO_DATA, INVALID_DATA_FORMAT, EVENT_FIELD_REQUIRED, EVENT_FIELD_BLANK)}


def hec_answer(reply: tuple[int, int, str], invalid_event_number: int | None = None) -> web.Response:
    body: dict[str, object] = {"text": reply[2], "code": reply[1]}
    if invalid_event_number is not None:
        body["invalid-event-number"] = invalid_event_number
    headers = {"Retry-After": "5"} if reply[0] == 503 else None
    return web.json_response(body, status=reply[0], headers=headers)


class HecRoute:
    """One ``format: splunk_hec`` source."""

    def __init__(self, name: str, config: WebhookSourceConfig, admitter: Admitter) -> None:
        self.name = name
        self.config = config
        self.admitter = admitter
        if config.auth is not None and config.auth.splunk_token is not None:
            self._token: bytes | None = config.auth.splunk_token.get_secret_value().encode()
        else:
            self._token = None

    def routes(self) -> list[web.RouteDef]:
        base = self.config.route_path.rstrip("/")
        return [
            web.post(base, self.events),
            web.post(f"{base}/event", self.events),
            web.post(f"{base}/event/1.0", self.events),
            web.post(f"{base}/raw", self.raw),
            web.post(f"{base}/raw/1.0", self.raw),
            web.get(f"{base}/health", self.health),
            web.get(f"{base}/health/1.0", self.health),
        ]

    def _auth(self, request: web.Request) -> tuple[int, int, str] | None:
        if self._token is None:
            return None
        header = request.headers.get("Authorization")
        if not header:
            return TOKEN_REQUIRED
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text given to b64decode
                return INVALID_AUTHORIZATION
        elif scheme.lower() != "splunk" or not value:
            return INVALID_AUTHORIZATION
        if not hmac.compare_digest(header_bytes(value.strip()), self._token):
            return INVALID_TOKEN
        return None

    def _refused(self, reason: Reason) -> None:
        self.admitter.metrics.requests_refused.labels(self.name, reason.value).inc()

    async def events(self, request: web.Request) -> web.Response:
        return await self._handle(request, raw=False)

    async def raw(self, request: web.Request) -> web.Response:
        if not (request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel")):
            self._refused(Reason.BAD_REQUEST)
            return hec_answer(CHANNEL_MISSING)
        return await self._handle(request, raw=True)

    async def health(self, request: web.Request) -> web.Response:
        full = self.admitter.destination.buffer.fill_ratio >= 1.0
        return hec_answer(UNHEALTHY if full else HEALTHY)

    async def _admit(self, request: web.Request, body: bytes, raw: bool) -> Admission | web.Response:
        try:
            records = hec.decode_raw(body) if raw else hec.decode(body, request.headers.get("Content-Type"))
        except DecodeError as exc:
            self._refused(Reason.DECODE_ERROR)
            return hec_answer(_BY_CODE.get(exc.hec_code or 6, INVALID_DATA_FORMAT), exc.event_number)
        if not records:
            return hec_answer(NO_DATA)
        if len(records) > self.config.max_events_per_request or not check_depth(records, self.config.max_json_depth):
            self._refused(Reason.TOO_LARGE)
            return hec_answer(INVALID_DATA_FORMAT)
        cands: list[Candidate] = []
        for i, rec in enumerate(records):
            try:
                fields, dedup = hec.to_event(rec)
            except EventInvalid as exc:
                cands.append(
                    Candidate(
                        None, f"/{i}", _letter(rec), errors=[{**e, "source": f"/{i}{e['source']}"} for e in exc.errors]
                    )
                )
                continue
            cands.append(Candidate(fields, f"/{i}", _letter(rec), dedup_key=dedup))
        return await self.admitter.admit(cands)

    async def _handle(self, request: web.Request, *, raw: bool) -> web.Response:
        refused = self._auth(request)
        if refused is not None:
            self._refused(Reason.AUTH)
            return hec_answer(refused)
        try:
            body = await read_body(request, self.config.max_body_bytes)
            adm = await self._admit(request, body, raw)
        except PayloadTooLarge:
            self._refused(Reason.TOO_LARGE)
            return web.json_response({"text": "Content too large", "code": 6}, status=413)
        except RequestTimeout:
            self._refused(Reason.TIMEOUT)
            return hec_answer(REQUEST_TIMEOUT)
        except BufferFull:
            self._refused(Reason.BUFFER_FULL)
            return hec_answer(SERVER_BUSY)
        except IntakeError:
            self._refused(Reason.INVALID_EVENT)
            return hec_answer(INVALID_DATA_FORMAT)
        if isinstance(adm, web.Response):
            return adm
        status = await settle(adm, self.config.ack_timeout_secs)
        if status is None or status == AckStatus.ERRORED:
            return hec_answer(SERVER_BUSY)
        if adm.errors or status == AckStatus.REJECTED:
            first = min(
                [int(e["source"].split("/")[1]) for e in adm.errors] + [adm.indexes[n] for n in adm.group.reasons]
            )
            return hec_answer(INVALID_DATA_FORMAT, first)
        return hec_answer(SUCCESS)


def _letter(record: Any) -> Any:
    """The record as a dead letter can keep it.

    Admission serializes a refused record with orjson, which refuses what the stdlib decoder of
    concatenated bodies lets through (lone surrogates from ``\\ud800`` escapes, integers over 64
    bits); such a record is kept as its ASCII JSON text instead of failing the request.
    """
    if isinstance(record, dict):
        try:
            orjson.dumps(record)
        except TypeError:  # orjson.JSONEncodeError
            return json.dumps(record, ensure_ascii=True).encode()
    return record
