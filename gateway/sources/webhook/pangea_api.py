"""Pangea-compatible intake: /v1/log, /v2/log, /v2/log_async and GET /request/{id}.

An application using the official ``pangea-sdk`` points ``base_url_template`` at the gateway
and works unchanged: answers carry the upstream's hashes (and envelopes when verbose).  An
async call (``/v2/log_async``) is answered 202 with a ``location`` on the gateway only once
its events are as safe as a 200 from ``/v2/log`` would make them (written to the spool or
the Kafka buffer, or, with the memory buffer, accepted by the upstream); until then the
request waits, and it is answered 503 + ``Retry-After`` if ``ack_timeout_secs`` passes first
(or 400 when events were refused).  A body's ``config_id`` picks the destination configured
with that id.  A full buffer is answered 503 + ``Retry-After`` here, not 429: the SDK retries
a 503 by itself (see :func:`sdk_retriable`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

import aiohttp
import msgspec
import orjson
from aiohttp import web

from gateway.acks import AckStatus
from gateway.errors import (
    AuthError,
    BufferFull,
    ConfigScopeRefused,
    GatewayUnavailable,
    IntakeError,
    ValidationFailed,
)
from gateway.normalize.fastpath import LOG_CALL_DEPTH, LogCall
from gateway.normalize.limits import check_depth, json_depth_at_most
from gateway.normalize.vendors.pangea import signature_of
from gateway.sources.intake import Admission, Admitter, Candidate
from gateway.sources.webhook.answers import RETRY_AFTER_SECS, answer, settle
from gateway.sources.webhook.auth import check_header
from gateway.sources.webhook.body import read_body
from gateway.sources.webhook.callers import Caller, Callers
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.sources.webhook.envelope import envelope, error_response, new_request_id, now_rfc3339
from gateway.sources.webhook.read_proxy import (
    CONFIG_SCOPED,
    IDEMPOTENT,
    PROXIED_PATHS,
    ReadProxy,
    config_id_of,
    with_config_id,
)
from gateway.telemetry.reasons import request_refusal_reason

_V1_KEYS = frozenset({"event", "verbose", "signature", "public_key", "config_id", "prev_root", "return_hash"})
_V2_KEYS = frozenset({"events", "verbose", "config_id", "prev_root"})
_ITEM_KEYS = frozenset({"event", "signature", "public_key"})
MAX_EVENTS = 1000
_BY_CONFIG_ID = frozenset({"/v1beta/config", "/v1beta/config/update", "/v1beta/config/delete"})
"""Management calls naming a configuration by ``id``: only those the gateway (or caller) serves."""
ASYNC_TTL_MINS = 60
MAX_PENDING_ASYNC = 10_000
SCOPE_TTL_SECS = 60.0
"""How long the upstream's word on a pass-through token's configurations is kept."""
MAX_SCOPES = 10_000
REQUEST_ID_HEADER = "X-Request-Id"
RETRIED_HEADER = "X-Pangea-Retried-Request-Ids"


def retried_ids(request: web.Request) -> list[str]:
    """Request ids of earlier attempts of this request (``X-Pangea-Retried-Request-Ids``), for dedup."""
    raw = request.headers.get(RETRIED_HEADER, "")
    return [r.strip() for r in raw.split(",") if r.strip()][:32]


def sdk_retriable(exc: IntakeError) -> IntakeError:
    """``exc`` as the SDK routes answer it: backpressure (429 elsewhere) as 503 + Retry-After.

    pangea-sdk retries 500, 502, 503 and 504 by itself, never 429: an app logging through
    the gateway would otherwise see its call fail whenever the buffer is full, where a 503
    makes it wait and resend (with ``X-Pangea-Retried-Request-Ids``, so nothing is doubled).
    Vendor routes keep 429, the convention of their senders.
    """
    if not isinstance(exc, BufferFull) or exc.http_status != 429:
        return exc
    retry_after = exc.retry_after_secs if exc.retry_after_secs is not None else RETRY_AFTER_SECS
    return GatewayUnavailable(exc.message, errors=exc.errors, retry_after_secs=retry_after)


class PendingAsync:
    """A /v2/log_async request answered 202 (so settled), whose result GET /request/{id} gives."""

    __slots__ = ("admission", "created", "request_time", "verbose")

    def __init__(self, admission: Admission, request_time: str, verbose: bool) -> None:
        self.admission = admission
        self.request_time = request_time
        self.verbose = verbose
        self.created = time.monotonic()


class PangeaApi:
    """Routes of one ``format: pangea`` source."""

    def __init__(
        self,
        name: str,
        config: WebhookSourceConfig,
        admitter: Admitter,
        by_config_id: dict[str, Admitter],
        proxy: ReadProxy | None = None,
        callers: Callers | None = None,
    ) -> None:
        """``proxy``: where the read and management calls go (none: those routes are not served);
        ``callers``: who may call, and where each may write and read (none: ``config.auth``)."""
        self.name = name
        self.config = config
        self.admitter = admitter
        self.by_config_id = by_config_id
        self.proxy = proxy
        self.callers = callers
        self.pass_through = config.auth is not None and config.auth.pass_through
        self._scopes: OrderedDict[tuple[bytes, str], tuple[float, tuple[int, str, str]]] = OrderedDict()
        self._pending: OrderedDict[str, PendingAsync] = OrderedDict()

    def routes(self) -> list[web.RouteDef]:
        p = (self.config.path or "").rstrip("/")
        return [
            web.post(f"{p}/v1/log", self.v1_log),
            web.post(f"{p}/v2/log", self.v2_log),
            web.post(f"{p}/v2/log_async", self.v2_log_async),
            web.get(f"{p}/request/{{request_id}}", self.get_request),
            *(web.post(f"{p}{path}", self._passed(path)) for path in (PROXIED_PATHS if self.proxy else ())),
        ]

    async def close(self) -> None:
        """Close the read proxy's connections."""
        if self.proxy is not None:
            await self.proxy.close()

    def _passed(self, path: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._pass(request, "POST", path)

        return handler

    async def _pass(self, request: web.Request, method: str, path: str) -> web.StreamResponse:
        """A read or management call, sent upstream (see :mod:`~gateway.sources.webhook.read_proxy`)."""
        assert self.proxy is not None
        try:
            caller = await self._identify(request, path)
            body: bytes | None = None
            if method == "POST":
                body = await read_body(request, self.config.max_body_bytes)
                body = self._scoped(body, path, caller)
        except IntakeError as exc:
            self.admitter.metrics.requests_refused.labels(self.name, request_refusal_reason(exc).value).inc()
            return error_response(exc)
        idempotent = method == "GET" or path in IDEMPOTENT
        try:
            return await self.proxy.forward(
                request,
                method,
                path,
                body,
                idempotent=idempotent,
                authorization=request.headers["Authorization"] if self.pass_through else None,
                retried_ids=retried_ids(request),
            )
        except (aiohttp.ClientError, TimeoutError, OSError):
            # No answer at all: a 503 the SDK retries by itself.
            return envelope(
                503,
                "ServiceNotAvailable",
                "the upstream audit log did not answer; retry later",
                None,
                headers={"Retry-After": str(RETRY_AFTER_SECS)},
            )

    async def _identify(self, request: web.Request, path: str) -> Caller | None:
        """The caller (``callers:``), allowed to call ``path``; None when ``auth`` decides alone."""
        if self.pass_through:
            given = request.headers.get("Authorization", "")
            if not given.startswith("Bearer ") or not given[7:].strip():
                raise AuthError("a bearer token is required (it is sent upstream with the call)")
            return None
        if self.callers is None:
            check_header(request, self.config.auth)
            return None
        caller = await self.callers.identify(request)
        caller.check_endpoint(path)
        return caller

    def _scoped(self, body: bytes, path: str, caller: Caller | None) -> bytes:
        """A read's body, its configuration one the caller may read (``config_id`` added when implied)."""
        if self.pass_through or (path not in CONFIG_SCOPED and path not in _BY_CONFIG_ID):
            return body  # pass-through: the caller's own token is sent, the upstream decides
        is_object, given = config_id_of(body)
        if not is_object:
            return body  # the upstream words the error; nothing is read
        if path in _BY_CONFIG_ID:  # a configuration by its `id`: one the caller may use
            _, wanted = _member(body, "id")
            if wanted is not None and wanted not in self._config_ids(caller):
                raise ConfigScopeRefused(f"The token has no access to configuration {wanted}")
            return body
        if caller is not None:
            implied = caller.admitter(given).destination.config.config_id
        elif given is None:
            implied = self.admitter.destination.config.config_id
        elif isinstance(given, str) and given in self._config_ids(None):
            implied = given
        else:
            raise ConfigScopeRefused(f"The token has no access to configuration {given}")
        return with_config_id(body, implied) if given is None and implied else body

    def _config_ids(self, caller: Caller | None = None) -> set[str]:
        if caller is not None:
            return {c for a in caller.admitters if (c := a.destination.config.config_id)}
        return self._all_config_ids()

    def _all_config_ids(self) -> set[str]:
        """The configurations this source writes to: the only ones it may read."""
        ids = set(self.by_config_id)
        own = self.admitter.destination.config.config_id
        if own:
            ids.add(own)
        return ids

    async def _body(self, request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
        return self._parse(await read_body(request, self.config.max_body_bytes), allowed)

    def _parse(self, raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValidationFailed(
                "body is not valid JSON", errors=[{"code": "BadFormat", "detail": "not JSON", "source": ""}]
            ) from None
        if not json_depth_at_most(raw, self.config.max_json_depth) and not check_depth(
            body, self.config.max_json_depth
        ):
            raise ValidationFailed(
                "body nests too deeply",
                errors=[{"code": "IsTooBig", "detail": f"over {self.config.max_json_depth} levels", "source": ""}],
            )
        if not isinstance(body, dict):
            raise ValidationFailed(
                "body must be a JSON object",
                errors=[{"code": "InvalidObject", "detail": "expected object", "source": ""}],
            )
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ValidationFailed(
                "unknown properties",
                errors=[
                    {"code": "UnexpectedProperty", "detail": f"unknown property {k!r}", "source": f"/{k}"}
                    for k in unknown
                ],
            )
        return body

    def _admitter(self, body: dict[str, Any], caller: Caller | None) -> Admitter:
        config_id = body.get("config_id")
        if caller is not None:
            return caller.admitter(config_id)
        if config_id is None or config_id == self.admitter.destination.config.config_id:
            return self.admitter
        if not isinstance(config_id, str) or config_id not in self.by_config_id:
            # 403, as the audit service answers a token without access to that configuration
            raise ConfigScopeRefused(f"The token has no access to configuration {config_id}")
        return self.by_config_id[config_id]

    @staticmethod
    def _candidate(item: Any, pointer: str) -> Candidate:
        original = item
        if not isinstance(item, dict) or not isinstance(item.get("event"), dict):
            return Candidate(
                None,
                pointer,
                original,
                errors=[
                    {
                        "code": "FieldRequired",
                        "detail": "an object with an `event` object is required",
                        "source": pointer,
                    }
                ],
            )
        unknown = sorted(set(item) - _ITEM_KEYS)
        if unknown:
            return Candidate(
                None,
                pointer,
                original,
                errors=[
                    {"code": "UnexpectedProperty", "detail": f"unknown property {k!r}", "source": f"{pointer}/{k}"}
                    for k in unknown
                ],
            )
        return Candidate(item["event"], f"{pointer}/event", original, signature_of(item))

    def _events(self, body: dict[str, Any]) -> list[Candidate]:
        events = body.get("events")
        if not isinstance(events, list) or not events:
            raise ValidationFailed(
                "`events` must be a non-empty array",
                errors=[{"code": "FieldRequired", "detail": "events must be a non-empty array", "source": "/events"}],
            )
        cap = min(MAX_EVENTS, self.config.max_events_per_request)
        if len(events) > cap:
            raise ValidationFailed(
                f"at most {cap} events per call",
                errors=[{"code": "AboveMaxItems", "detail": f"more than {cap} events", "source": "/events"}],
            )
        return [self._candidate(item, f"/events/{i}") for i, item in enumerate(events)]

    async def _guard(self, request: web.Request, handler: Any) -> web.Response:
        rid, rtime = new_request_id(), now_rfc3339()
        try:
            resp: web.Response = await handler(request, rid, rtime)
        except IntakeError as exc:
            self.admitter.metrics.requests_refused.labels(self.name, request_refusal_reason(exc).value).inc()
            resp = error_response(sdk_retriable(exc), request_id=rid, request_time=rtime)
        # dedup (issue 4): the SDK names the ids of earlier attempts when it retries a request
        resp.headers[REQUEST_ID_HEADER] = rid
        return resp

    async def _admit(self, request: web.Request, rid: str, path: str) -> tuple[Admission, bool]:
        """Parse, normalize and buffer a log call's events; returns (admission, verbose).

        Kept apart from the waiting so the parsed body is freed before the wait: a request
        waiting on the upstream then holds only its acks and pointers.
        """
        caller = await self._identify(request, path)
        single = path == "/v1/log"
        raw = await read_body(request, self.config.max_body_bytes)
        if not single and not self.pass_through:
            compiled = self._compiled(raw, caller)
            if compiled is not None:
                admitter, call = compiled
                adm = await admitter.admit(
                    (),
                    keep_results=True,
                    want_envelope=call.verbose,
                    request_key=rid,
                    retried_keys=retried_ids(request),
                    pointer_template="/events/{}/event",
                    items=call.items,
                )
                return adm, call.verbose
        body = self._parse(raw, _V1_KEYS if single else _V2_KEYS)
        credential = request.headers["Authorization"] if self.pass_through else None
        admitter = await self._pass_through_admitter(body, credential) if credential else self._admitter(body, caller)
        verbose = bool(body.get("verbose"))
        cands = [self._candidate({k: body[k] for k in _ITEM_KEYS if k in body}, "")] if single else self._events(body)
        adm = await admitter.admit(
            cands,
            keep_results=True,
            want_envelope=verbose,
            request_key=rid,
            retried_keys=retried_ids(request),
            pointer_template="/event" if single else "/events/{}/event",
            credential=credential,
            v1_members=_v1_members(body) if single and verbose else None,
        )
        return adm, verbose

    def _compiled(self, raw: bytes, caller: Caller | None) -> tuple[Admitter, LogCall] | None:
        """A ``/v2/log`` body through its destination's compiled path (see
        :meth:`FastPath.log_call`): its admitter and its events' items, or None when the full
        path must take it (anything but the plain valid call; restrictions to check; a
        signing destination; the tap on; a depth limit below such a body's).

        The full path gives the same items and admitter for any body this takes, and words the
        errors of any it does not (``tests/unit/webhook/test_pangea_log_call.py``)."""
        if self.config.max_json_depth < LOG_CALL_DEPTH:
            return None
        fast = self.admitter.destination.fast_path()
        if fast is None:
            return None
        cap = min(MAX_EVENTS, self.config.max_events_per_request)
        call = fast.log_call(raw, cap)
        if call is None:
            return None
        admitter = self._admitter({"config_id": call.config_id}, caller)
        if not admitter.takes_items:
            return None
        own = admitter.destination.fast_path()
        if own is not fast:  # a config_id's destination with another schema (or signing)
            call = own.log_call(raw, cap) if own is not None else None
            if call is None:
                return None
        return admitter, call

    async def _pass_through_admitter(self, body: dict[str, Any], authorization: str) -> Admitter:
        """The destination of a pass-through write, decided as the upstream decides for the token.

        The caller's token is asked ``/v1/schema`` (cached for :data:`SCOPE_TTL_SECS`): the
        upstream's own answer says whether it may use the configuration named, or which one
        it means when none is (its ``AmbiguousConfigID``, ``MissingConfigIDScope`` and
        ``Unauthorized`` are answered as they are).  Its events then go upstream with it.
        """
        served = {a.destination.config.config_id: a for a in (self.admitter, *self.by_config_id.values())}
        config_id = body.get("config_id")
        if config_id is not None:
            admitter = served.get(config_id) if isinstance(config_id, str) else None
            if admitter is None:
                raise ConfigScopeRefused(f"The token has no access to configuration {config_id}")
            refusal = await self._scope(authorization, config_id, required=False)
            if refusal is not None:
                raise refusal
            return admitter
        refusal = await self._scope(authorization, None, required=True)
        if refusal is not None:
            raise refusal
        mine = [a for cid, a in served.items() if cid and await self._scope(authorization, cid, required=False) is None]
        if len(mine) != 1:
            raise ConfigScopeRefused("The token has access to no configuration this gateway serves")
        return mine[0]

    async def _scope(self, authorization: str, config_id: str | None, *, required: bool) -> IntakeError | None:
        """None when the upstream lets ``authorization`` use ``config_id`` (None: its only one),
        else the refusal to answer.  ``required``: an answer that cannot tell (the token may not
        call /v1/schema) is a refusal too; otherwise it is left to the delivery to find out."""
        assert self.proxy is not None
        key = (hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).digest(), config_id or "")
        now = time.monotonic()
        cached = self._scopes.get(key)
        if cached is not None and cached[0] > now:
            status, pangea_status, summary = cached[1]
        else:
            body = orjson.dumps({"config_id": config_id} if config_id else {})
            try:
                status, pangea_status, summary = await self.proxy.probe("/v1/schema", body, authorization)
            except (aiohttp.ClientError, TimeoutError, OSError):
                status, pangea_status, summary = 503, "", ""
            if status < 500 and status != 429:
                self._scopes[key] = (now + SCOPE_TTL_SECS, (status, pangea_status, summary))
                while len(self._scopes) > MAX_SCOPES:
                    self._scopes.popitem(last=False)
        if status == 200:
            return None
        if status >= 500 or status == 429:
            return GatewayUnavailable("the upstream audit log is busy; retry later", retry_after_secs=RETRY_AFTER_SECS)
        if status == 403 and pangea_status == "Unauthorized":  # no /v1/schema scope: cannot tell
            if not required:
                return None
            return ValidationFailed(
                "this token must name config_id: the gateway cannot ask the upstream which configuration it means",
                errors=[{"code": "MissingConfigID", "detail": "config_id is required", "source": "/config_id"}],
            )
        refusal = IntakeError(summary or "refused by the upstream audit log")
        refusal.http_status = status
        refusal.pangea_status = pangea_status or "ValidationError"
        return refusal

    async def v1_log(self, request: web.Request) -> web.Response:
        async def handle(request: web.Request, rid: str, rtime: str) -> web.Response:
            adm, verbose = await self._admit(request, rid, "/v1/log")
            status = await settle(adm, self.config.ack_timeout_secs)
            results = adm.group.results or []
            result = _shape(_as_object(results[0]), verbose) if results and results[0] is not None else {}
            return answer(status, adm, result, request_id=rid, request_time=rtime)

        return await self._guard(request, handle)

    async def v2_log(self, request: web.Request) -> web.Response:
        async def handle(request: web.Request, rid: str, rtime: str) -> web.Response:
            adm, verbose = await self._admit(request, rid, "/v2/log")
            status = await settle(adm, self.config.ack_timeout_secs)
            return answer(status, adm, _bulk_result(adm, verbose), request_id=rid, request_time=rtime)

        return await self._guard(request, handle)

    async def v2_log_async(self, request: web.Request) -> web.Response:
        async def handle(request: web.Request, rid: str, rtime: str) -> web.Response:
            adm, verbose = await self._admit(request, rid, "/v2/log_async")
            # 202 promises what a 2xx from /v2/log does, so it waits for the same acks: the
            # events durable in the spool or Kafka buffer, or (memory buffer) accepted upstream.
            # A memory buffer loses what a stop or a crash catches in it; a 202 given before the
            # upstream had the events would be a promise broken by every restart.
            status = await settle(adm, self.config.ack_timeout_secs)
            if status != AckStatus.DELIVERED or adm.errors:
                # The outcome is known (or the wait timed out): answered as /v2/log answers it,
                # a 503 + Retry-After while the upstream is away, a 400 naming refused events.
                return answer(status, adm, _bulk_result(adm, verbose), request_id=rid, request_time=rtime)
            self._remember(rid, PendingAsync(adm, rtime, verbose))
            location = f"{request.scheme}://{request.host}{(self.config.path or '').rstrip('/')}/request/{rid}"
            return envelope(
                202,
                "Accepted",
                "Accepted; poll the location for the result",
                {"location": location, "retry_counter": 0, "ttl_mins": ASYNC_TTL_MINS},
                request_id=rid,
                request_time=rtime,
            )

        return await self._guard(request, handle)

    def _remember(self, rid: str, pending: PendingAsync) -> None:
        now = time.monotonic()
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if len(self._pending) < MAX_PENDING_ASYNC and now - oldest.created < ASYNC_TTL_MINS * 60:
                break
            self._pending.popitem(last=False)
        self._pending[rid] = pending

    async def get_request(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["request_id"]
        try:
            await self._identify(request, "/request")
        except IntakeError as exc:
            return error_response(exc)
        pending = self._pending.get(rid)
        if pending is None:
            if self.proxy is not None:  # a search, export... the upstream answered 202 to
                return await self._pass(request, "GET", f"/request/{rid}")
            return envelope(404, "NotFound", "no such request", None)
        # Remembered only once settled (see v2_log_async): the result is final.
        return answer(
            pending.admission.group.status,
            pending.admission,
            _bulk_result(pending.admission, pending.verbose),
            request_id=rid,
            request_time=pending.request_time,
        )


def _v1_members(body: dict[str, Any]) -> bytes:
    """What a verbose /v1/log call sends beside its event: ``verbose`` and its ``prev_root``,
    so the answer carries ``unpublished_root``, ``membership_proof`` and ``consistency_proof``
    (the SDK's ``log(verify=True)`` checks them)."""
    out = b',"verbose":true'
    prev_root = body.get("prev_root")
    if isinstance(prev_root, str):
        out += b',"prev_root":' + orjson.dumps(prev_root)
    return out


def _member(body: bytes, name: str) -> tuple[bool, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, None
    return (True, parsed.get(name)) if isinstance(parsed, dict) else (False, None)


_RAW_ONLY = {msgspec.Raw}


def _as_object(result: Any) -> Any:
    """A per-event result kept as its JSON text (:class:`msgspec.Raw`) read as an object."""
    return msgspec.json.decode(result) if type(result) is msgspec.Raw else result


def _shape(result: Any, verbose: bool) -> dict[str, Any]:
    if not isinstance(result, dict):
        return {}
    if verbose:
        return result
    return {k: v for k, v in result.items() if k != "envelope"}


def _bulk_result(adm: Admission, verbose: bool) -> dict[str, Any] | orjson.Fragment:
    results = adm.group.results or []
    types = set(map(type, results))
    if msgspec.Raw in types:
        if types == _RAW_ONLY:
            # Every result as the upstream wrote it, none with an envelope (see Answer.results):
            # spliced into the answer as they are, no dict or copy per event (issue 18).
            return orjson.Fragment(b'{"results":[' + b",".join(results) + b"]}")
        results = [_as_object(r) for r in results]  # a request split over batches
    if not verbose:
        # The usual answer: results without envelopes (none was asked for) are sent as they
        # are; only one carrying an envelope is copied without it (issue 18: no copy per event).
        return {
            "results": [
                r if type(r) is dict and "envelope" not in r else _shape(r, False) for r in results if r is not None
            ]
        }
    return {"results": [_shape(r, verbose) for r in results if r is not None]}
