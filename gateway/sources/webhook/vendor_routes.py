"""Vendor webhook routes: Auth0 log streams, Okta event hooks, GitHub webhooks, GitLab audit
event streaming, AWS Firehose deliveries, generic JSON.

Each route: authenticate → read the body within limits → the vendor's ``decode`` splits it
into records → ``to_event`` maps each record → admission → wait for the acks → answer.

Firehose answers in its own shape, not Pangea's: ``200 {"requestId", "timestamp"}`` exactly when
every record was stored, else the status with ``{"requestId", "timestamp", "errorMessage"}``
(Firehose retries every status but 413, and keeps the request id across retries: the records
already stored are not stored again, their dedup key being request id + record index).
"""

from __future__ import annotations

import time
from operator import itemgetter
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import IntakeError, ValidationFailed
from gateway.normalize.limits import check_depth, json_depth_at_most
from gateway.normalize.mapping import Mapping
from gateway.normalize.schema import EventInvalid
from gateway.normalize.vendors import VENDORS, DecodeError, Vendor, firehose
from gateway.normalize.vendors import github as github_vendor
from gateway.sources.intake import Admission, Admitter, Candidate
from gateway.sources.webhook.answers import answer, settle
from gateway.sources.webhook.auth import SignatureVerifier, check_header, check_hmac_sha256
from gateway.sources.webhook.body import read_body
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.sources.webhook.envelope import envelope, error_response, new_request_id, now_rfc3339
from gateway.telemetry.reasons import request_refusal_reason

_first = itemgetter(0)
_second = itemgetter(1)

_JSON_DOCUMENT_FORMATS = frozenset({"auth0", "okta", "gitlab", "json"})
"""Formats whose records are the body's JSON documents or parts of them (their decoders take
them from ``orjson.loads`` of the body or its lines), with no ``subject`` of their own."""


class VendorRoute:
    """One vendor webhook source's routes."""

    def __init__(self, name: str, config: WebhookSourceConfig, admitter: Admitter) -> None:
        self.name = name
        self.config = config
        self.admitter = admitter
        self.vendor: Vendor = VENDORS[config.format]
        if config.format == "firehose":
            self.vendor = firehose.vendor(config.records or "json", config.max_body_bytes)
        self.mapping = Mapping(config.map) if config.map else None
        # A map is the whole mapping where the format has none of its own (JSON records).
        self.map_only = config.format == "json" or (config.format == "firehose" and config.records in (None, "json"))
        sig = config.auth.signature if config.auth is not None else None
        self.verifier = SignatureVerifier(sig, store=admitter.dedup, namespace=name) if sig is not None else None

    def routes(self) -> list[web.RouteDef]:
        path = self.config.route_path
        out = [web.post(path, self.handle)]
        if self.config.format == "okta":
            out.append(web.get(path, self.okta_verify))
        return out

    def _authenticate(self, request: web.Request, raw: bytes | None, held: list[bytes]) -> None:
        """Header auth before the body is read (``raw`` None); an HMAC once it is.

        A verified timestamped signature is reserved against replays; its key goes to ``held``
        for :meth:`handle` to give back if the request fails.
        """
        auth = self.config.auth
        if auth is None:
            return
        if self.verifier is not None:
            if raw is None:
                self.verifier.present(request)
            else:
                key = self.verifier.verify(request, raw)
                if key is not None:
                    held.append(key)
        elif auth.hmac_sha256_secret is None:
            if raw is None:
                check_header(request, auth)
        elif raw is not None:
            check_hmac_sha256(
                raw, request.headers.get("X-Hub-Signature-256"), auth.hmac_sha256_secret.get_secret_value()
            )

    def _records(self, request: web.Request, raw: bytes) -> list[Any]:
        try:
            records = self.vendor.decode(raw, request.headers.get("Content-Type"))
        except DecodeError as exc:
            raise ValidationFailed(
                f"cannot decode the body: {exc}", errors=[{"code": "BadFormat", "detail": str(exc), "source": ""}]
            ) from None
        subject = self.vendor.subject
        limit = self.config.max_json_depth
        # Records of these formats are parts of the body's JSON documents, one container (the
        # list of them) added: a body nesting below the limit needs no walk of its records.
        if not (
            self.config.format in _JSON_DOCUMENT_FORMATS and json_depth_at_most(raw, limit - 1)
        ) and not check_depth([subject(r) for r in records] if subject else records, limit):
            raise ValidationFailed(
                "body nests too deeply",
                errors=[{"code": "IsTooBig", "detail": f"over {self.config.max_json_depth} levels", "source": ""}],
            )
        if len(records) > self.config.max_events_per_request:
            raise ValidationFailed(
                "too many events",
                errors=[
                    {
                        "code": "AboveMaxItems",
                        "detail": f"over {self.config.max_events_per_request} events",
                        "source": "",
                    }
                ],
            )
        if self.config.format == "github":
            if not request.headers.get("X-GitHub-Event", "").strip():
                # Every GitHub delivery names its event; without it the action would be a bare verb.
                raise ValidationFailed(
                    "missing X-GitHub-Event header",
                    errors=[{"code": "FieldRequired", "detail": "the X-GitHub-Event header is required", "source": ""}],
                )
            records = [
                {
                    "event": request.headers.get("X-GitHub-Event", ""),
                    "delivery": request.headers.get("X-GitHub-Delivery"),
                    "payload": r,
                }
                for r in records
            ]
        return records

    def _candidate(
        self, record: Any, pointer: str, mapped: tuple[dict[str, Any], str | None] | None = None
    ) -> Candidate:
        """Record ``record``'s candidate; ``mapped``: its ``to_event`` if already called."""
        subject = self.vendor.subject(record) if self.vendor.subject else record
        original = subject
        try:
            if mapped is not None:
                fields, dedup = mapped
            elif self.mapping is not None and self.map_only:
                fields = self.mapping.apply(subject)
                dedup = record.key if isinstance(record, firehose.FirehoseRecord) else None
            else:
                fields, dedup = self.vendor.to_event(record)
                if self.mapping is not None:
                    fields.update(self.mapping.apply(subject))
        except EventInvalid as exc:
            return Candidate(
                None, pointer, original, errors=[{**e, "source": pointer + e.get("source", "")} for e in exc.errors]
            )
        return Candidate(fields, pointer, original, dedup_key=dedup)

    def _candidates(
        self, records: list[Any], mapped: list[tuple[dict[str, Any], str | None]] | None = None
    ) -> list[Candidate]:
        """Each record's :class:`Candidate` (the full path, which words every error)."""
        return [
            self._candidate(
                r,
                r.pointer if isinstance(r, firehose.FirehoseRecord) else f"/{i}",
                None if mapped is None else mapped[i],
            )
            for i, r in enumerate(records)
        ]

    async def _admit(self, request: web.Request, raw: bytes) -> Admission:
        """Decode, map, normalize and buffer; kept apart so the records are freed before the wait."""
        records = self._records(request, raw)
        if self.mapping is None:
            # Every record mapped by one C-level map, and admitted as lists of fields and ids
            # (Admitter.admit_mapped): no Candidate nor pointer per record unless one is needed
            # (issue 18).  A record that cannot be mapped: the full path words its error.
            try:
                mapped = list(map(self.vendor.to_event, records))
            except EventInvalid:
                pass
            else:
                fields = list(map(_first, mapped))
                keys = list(map(_second, mapped))
                return await self.admitter.admit_mapped(fields, keys, lambda: self._candidates(records, mapped))
        return await self.admitter.admit(self._candidates(records))

    async def handle(self, request: web.Request) -> web.Response:
        """A POST: the vendor's delivery, answered in its shape."""
        held: list[bytes] = []
        try:
            if self.config.format == "firehose":
                resp = await self.handle_firehose(request, held)
            else:
                resp = await self.handle_vendor(request, held)
        except BaseException:
            self._release(held)
            raise
        if not 200 <= resp.status < 300:
            # Not accepted: the sender may retry the same signed request; that is no replay.
            self._release(held)
        elif self.verifier is not None:
            for key in held:
                self.verifier.accepted(key)
        return resp

    def _release(self, held: list[bytes]) -> None:
        if self.verifier is not None:
            for key in held:
                self.verifier.release(key)

    async def handle_vendor(self, request: web.Request, held: list[bytes]) -> web.Response:
        """A delivery answered with the Pangea envelope (Okta: an empty 200)."""
        rid, rtime = new_request_id(), now_rfc3339()
        try:
            # An unauthenticated sender is refused before its body is read.
            self._authenticate(request, None, held)
            raw = await read_body(request, self.config.max_body_bytes)
            self._authenticate(request, raw, held)
            if self.config.format == "github" and github_vendor.is_ping(request.headers.get("X-GitHub-Event", "")):
                return envelope(200, "Success", "pong", {}, request_id=rid, request_time=rtime)
            adm = await self._admit(request, raw)
            del raw
            status = await settle(adm, self.config.ack_timeout_secs)
            resp = answer(status, adm, {}, request_id=rid, request_time=rtime)
            if self.config.format == "okta" and resp.status == 200:
                return web.Response(status=200)  # Okta wants an empty 200/204 body
            return resp
        except IntakeError as exc:
            reason = request_refusal_reason(exc)
            self.admitter.metrics.requests_refused.labels(self.name, reason.value).inc()
            return error_response(exc, request_id=rid, request_time=rtime)

    async def handle_firehose(self, request: web.Request, held: list[bytes]) -> web.Response:
        """A Firehose delivery, answered in Firehose's shape (see the module docstring)."""
        # The header's id until the body is read; then the body's, which Firehose echoes back.
        rid = request.headers.get("X-Amz-Firehose-Request-Id", "")[: firehose.MAX_REQUEST_ID_CHARS]
        try:
            self._authenticate(request, None, held)
            raw = await read_body(request, self.config.max_body_bytes)
            self._authenticate(request, raw, held)
            known = firehose.request_of(raw)
            if known is not None:
                rid = known[0]
            adm = await self._admit(request, raw)
            del raw
            status = await settle(adm, self.config.ack_timeout_secs)
            resp = answer(status, adm, {}, request_id=new_request_id(), request_time=now_rfc3339())
        except IntakeError as exc:
            reason = request_refusal_reason(exc)
            self.admitter.metrics.requests_refused.labels(self.name, reason.value).inc()
            retry = None if exc.retry_after_secs is None else str(max(1, round(exc.retry_after_secs)))
            return firehose_answer(exc.http_status, rid, _firehose_message(exc.message, exc.errors), retry)
        if resp.status == 200:
            return firehose_answer(200, rid)
        # The events' outcome, told in Firehose's words: the envelope's summary and errors.
        body = orjson.loads(resp.body) if isinstance(resp.body, bytes) else {}
        errors = (body.get("result") or {}).get("errors") or []
        return firehose_answer(
            resp.status, rid, _firehose_message(body.get("summary", ""), errors), resp.headers.get("Retry-After")
        )

    async def okta_verify(self, request: web.Request) -> web.Response:
        """Okta's one-time verification: echo the challenge header as ``{"verification": ...}``.

        Okta sends its auth header on this GET too; it is checked when present but not
        required (the answer reveals nothing but the challenge it was given).
        """
        auth = self.config.auth
        if auth is not None and auth.header in request.headers:
            try:
                check_header(request, auth)
            except IntakeError as exc:
                return error_response(exc)
        challenge = request.headers.get("X-Okta-Verification-Challenge")
        if not challenge:
            return error_response(ValidationFailed("missing X-Okta-Verification-Challenge header"))
        return web.json_response({"verification": challenge})


def _firehose_message(summary: str, errors: list[dict[str, Any]] | None) -> str:
    parts = [summary] + [f"{e.get('source') or '/'}: {e.get('detail')}" for e in (errors or [])[:5]]
    if errors and len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(p for p in parts if p)[:2000]


def firehose_answer(
    status: int, request_id: str, error: str | None = None, retry_after: str | None = None
) -> web.Response:
    """Firehose's answer: ``{"requestId", "timestamp"}`` (ms), plus ``errorMessage`` on a failure."""
    body: dict[str, Any] = {"requestId": request_id, "timestamp": time.time_ns() // 1_000_000}
    if error is not None:
        body["errorMessage"] = error
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)
