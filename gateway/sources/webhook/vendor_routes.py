"""Vendor webhook routes: Auth0 log streams, Okta event hooks, GitHub webhooks, generic JSON.

Each route: authenticate → read the body within limits → the vendor's ``decode`` splits it
into records → ``to_event`` maps each record → admission → wait for the acks → answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import AuthError, IntakeError, ValidationFailed
from gateway.normalize.limits import check_depth
from gateway.normalize.mapping import Mapping
from gateway.normalize.schema import EventInvalid
from gateway.normalize.vendors import VENDORS, DecodeError, Vendor
from gateway.normalize.vendors import github as github_vendor
from gateway.sources.intake import Admission, Admitter, Candidate
from gateway.sources.webhook.answers import answer, settle
from gateway.sources.webhook.auth import check_header, check_hmac_sha256
from gateway.sources.webhook.body import read_body
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.sources.webhook.envelope import envelope, error_response, new_request_id, now_rfc3339


class VendorRoute:
    """One vendor webhook source's routes."""

    def __init__(self, name: str, config: WebhookSourceConfig, admitter: Admitter) -> None:
        self.name = name
        self.config = config
        self.admitter = admitter
        self.vendor: Vendor = VENDORS[config.format]
        self.mapping = Mapping(config.map) if config.map else None

    def routes(self) -> list[web.RouteDef]:
        path = self.config.route_path
        out = [web.post(path, self.handle)]
        if self.config.format == "okta":
            out.append(web.get(path, self.okta_verify))
        return out

    def _authenticate(self, request: web.Request, raw: bytes | None) -> None:
        """Header auth before the body is read (``raw`` None); an HMAC once it is."""
        auth = self.config.auth
        if auth is None:
            return
        if auth.hmac_sha256_secret is None:
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
        if not check_depth(records, self.config.max_json_depth):
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

    def _candidate(self, record: Any, pointer: str) -> Candidate:
        original = record
        try:
            if self.mapping is not None and self.config.format == "json":
                fields, dedup = self.mapping.apply(record), None
            else:
                fields, dedup = self.vendor.to_event(record)
                if self.mapping is not None:
                    fields.update(self.mapping.apply(record))
        except EventInvalid as exc:
            return Candidate(
                None, pointer, original, errors=[{**e, "source": pointer + e.get("source", "")} for e in exc.errors]
            )
        return Candidate(fields, pointer, original, dedup_key=dedup)

    async def _admit(self, request: web.Request, raw: bytes) -> Admission:
        """Decode, map, normalize and buffer; kept apart so the records are freed before the wait."""
        records = self._records(request, raw)
        cands = [self._candidate(r, f"/{i}") for i, r in enumerate(records)]
        return await self.admitter.admit(cands)

    async def handle(self, request: web.Request) -> web.Response:
        rid, rtime = new_request_id(), now_rfc3339()
        try:
            # An unauthenticated sender is refused before its body is read.
            self._authenticate(request, None)
            raw = await read_body(request, self.config.max_body_bytes)
            self._authenticate(request, raw)
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
            reason = "auth" if isinstance(exc, AuthError) else type(exc).__name__
            self.admitter.metrics.requests_refused.labels(self.name, reason).inc()
            return error_response(exc, request_id=rid, request_time=rtime)

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
