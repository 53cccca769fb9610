"""The Pangea sink: batches to a Pangea-compatible Secure Audit Log (``/v2/log``, ``/v2/log_async``).

One :class:`PangeaSink` per destination.  It implements the three pieces of
:class:`gateway.delivery.sink.Sink` (build the ``/v2/log`` body, send it, classify the answer:
a 202 as :class:`~gateway.delivery.sink.Pending`) and the poll hook of
:class:`~gateway.delivery.sink.PollingSink` (what a poll's answer means); the
:class:`~gateway.delivery.driver.DeliveryDriver` polls, retries with backoff, dead-letters,
counts and resolves the acks.  What the answers mean:

* **200** with a Pangea ``Success`` envelope holding one result per event sent — every event
  DELIVERED with its ``result.results[i]`` (``{hash, envelope?}``).  Any other 200 (garbage,
  ``{}``, a wrong count, an answer over the read bound: a proxy or a wrong URL) proves nothing
  was stored: retried like a 5xx, metric reason ``invalid_answer``.
* **202** — polled by the driver (:mod:`gateway.delivery.poll`; this sink's :mod:`.poll` says
  where and what a poll's answer means) until the final answer, which is then handled like a direct one.
  If polling gives up, the batch is sent again with ``X-Pangea-Retried-Request-Ids``; the
  upstream had stored the events at 202 time, so this can duplicate them: delivery is
  at-least-once, never at-most-once.
* **retriable** (:func:`gateway.delivery.retry.classify`: 408, 429, 5xx but 501, network errors) —
  sent again after :func:`gateway.delivery.retry.backoff_secs` (full jitter, ``Retry-After`` as a floor), each retry
  naming the request ids of earlier attempts; until ``retry.max_attempts`` (then ERRORED, so
  the source re-delivers) or until cancelled.
* **400 with errors pointing at events** (``/events/N/...``) — those events REJECTED (dead
  letters, reason ``upstream_rejected``), the rest sent again at once.  A 4xx pointing at no
  event rejects the whole batch the same way.
* **the gateway's own credential refused** (401, or 403 other than ForbiddenFieldValue, after
  one credential refresh; the OAuth2 token endpoint refusing the client; an unusable token file)
  — the gateway's fault, not the sender's: retried with backoff (metric reason ``credentials``,
  a fresh credential fetched before each attempt) until the credential works, never
  dead-lettered; :meth:`PangeaSink.check` reports ``upstream refused credentials`` meanwhile.
  A 403 ForbiddenFieldValue names an event: that event is rejected, as for a 400.
* **configuration errors** (AmbiguousConfigID, MissingConfigID, MissingConfigIDScope other than
  as a 401/403) — the batch is dead-lettered with reason ``config_error`` and
  :meth:`PangeaSink.check` reports the problem.

No text of an upstream or token-endpoint answer (``summary``, error descriptions) goes into an
ack reason, a log line or a readiness reason: they carry HTTP statuses and error codes only.

Ack details: DELIVERED carries the upstream's per-event result, as its JSON text
(``msgspec.Raw``, passed on unparsed) or, when some result of the answer carries an
``envelope``, as a dict (see :meth:`Answer.results`); REJECTED a list of error
dicts ``{code, detail, source}`` whose ``source`` is a JSON pointer *into the event's item*
(``/event/actor``; the upstream's ``/events/N`` prefix, an index into our request body, is
stripped, so a source re-points it at its own request); ERRORED a short reason string.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import aiohttp
import orjson
from pydantic import ValidationError

from gateway.batching import Batch
from gateway.delivery.deadletter import DeadLetterStore
from gateway.delivery.driver import DeliveryDriver
from gateway.delivery.poll import poll_until_final
from gateway.delivery.retry import Verdict, backoff_secs, classify, retry_reason
from gateway.delivery.sink import Delivered, Outcome, Polled, Reject, Retry
from gateway.errors import (
    GatewayError,
    RejectedUpstreamError,
    RetriableUpstreamError,
    ShutdownError,
    UpstreamConfigError,
    UpstreamCredentialsRefused,
)
from gateway.event import Event
from gateway.normalize.config import SchemaFieldConfig
from gateway.sinks.pangea.auth import Credentials, credentials_from_config
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sinks.pangea.poll import pending, poll_step
from gateway.sinks.pangea.request_builder import (
    USER_AGENT,
    Answer,
    PangeaRequest,
    event_pointer,
    join_url,
    log_body,
    parse_answer,
    request_headers,
    v1_log_body,
)
from gateway.telemetry.metrics import Metrics

__all__ = ["CONFIG_ERROR_STATUSES", "PangeaSink"]

log = logging.getLogger(__name__)

_wants_envelope = attrgetter("want_envelope")

CONFIG_ERROR_STATUSES = frozenset({"AmbiguousConfigID", "MissingConfigID", "MissingConfigIDScope"})
"""Pangea statuses that mean "fix the configuration" (as a 401/403 they are a refused credential)."""

CREDENTIALS_REFUSED = "upstream refused credentials"
"""How readiness (and the logs) name a refused credential; operators and tests look for it."""

_CHECK_TTL_SECS = 5.0
"""How long a readiness probe result is reused: probes must not hammer the upstream."""
_PROBLEM_HOLD_SECS = 30.0
"""A configuration problem seen by ``send`` is reported at least this long even if the probe
(``/v1/schema``) passes, since the probe cannot see every problem (a token allowed to read the
schema but not to log).  After that a passing probe clears it, so an unready pod that receives
no traffic can still become ready once the problem is fixed upstream."""
_PROBE_TIMEOUT_SECS = 5.0
_MAX_REASON_CHARS = 300
_MAX_ANSWER_BYTES = 1 << 20
"""Answers are read up to this bound (plus twice the request body for a log call, whose verbose
answer echoes its events); a larger one is not read: for a 200 it proves nothing was stored."""


_CALLER_AUTHORIZATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller_authorization", default=None)
"""The ``Authorization`` of the batch this task is sending when it is a caller's (issue 14,
pass-through): set by :meth:`PangeaSink.call` for the call's duration, read by ``_request``.
A context variable, so batches sent concurrently by other workers keep their own."""


_SENT: contextvars.ContextVar[PangeaRequest | None] = contextvars.ContextVar("pangea_request_sent", default=None)
"""The request this task's last :meth:`PangeaSink.call` sent, for :meth:`PangeaSink.classify`."""


@dataclass(slots=True)
class _Problem:
    reason: str
    seen_at: float


class PangeaSink:
    """Sends batches of one destination to the upstream audit log (see the module doc).

    ``on_invalid_schema`` is called when the upstream answers ``InvalidSchema`` (the
    destination's cached schema is probably stale).  ``credentials`` overrides the ones
    the configuration names (tests, embedding); ``sleep`` is the poll and backoff sleep of
    :meth:`send` and :meth:`fetch_schema` (tests observe delays through it), ``clock`` the
    poll deadline's clock.  ``metrics`` counts the HTTP calls;
    ``deadletters`` is where :meth:`send` (the sink used without a pipeline) dead-letters.
    """

    def __init__(
        self,
        destination: str,
        config_id: str | None,
        upstream: UpstreamConfig,
        metrics: Metrics,
        deadletters: DeadLetterStore,
        *,
        on_invalid_schema: Callable[[], None] | None = None,
        credentials: Credentials | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.destination = destination
        self.config_id = config_id
        self.upstream = upstream
        self._metrics = metrics
        self._on_invalid_schema = on_invalid_schema
        self._credentials = credentials
        self._sleep = sleep
        self._clock = clock
        self._base = upstream.url.rstrip("/")
        self._path = "/v2/log" if upstream.endpoint == "log" else "/v2/log_async"
        self._session: aiohttp.ClientSession | None = None
        self._prefetch: asyncio.Task[None] | None = None
        self._problem: _Problem | None = None
        self._probe_result: str | None = None
        self._probe_at: float | None = None
        self._probe_lock = asyncio.Lock()
        self._driver = DeliveryDriver(
            self, upstream.retry, metrics, deadletters, poll=upstream.poll, sleep=sleep, clock=clock
        )

    def __repr__(self) -> str:
        return f"PangeaSink(destination={self.destination!r}, url={self._base!r}, endpoint={self._path!r})"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session and start fetching credentials; never fails on an unreachable upstream."""
        if self._session is not None:
            return
        up = self.upstream
        # Pool: one connection per concurrent send, plus one for the readiness probe and
        # one for an OAuth2 token fetch, so neither queues behind slow sends.
        connector = aiohttp.TCPConnector(limit=up.max_in_flight + 2, ssl=up.verify_tls)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=up.timeout_secs),
            headers={"User-Agent": USER_AGENT},
            # No cookies: the audit API (and a token endpoint) sets none worth keeping, and a
            # real jar filters its cookies for every request (~1% of a /v2/log gateway's CPU).
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        if self._credentials is None:
            self._credentials = credentials_from_config(up, self._session, self._metrics)
        self._prefetch = asyncio.create_task(self._prefetch_credentials(), name=f"sink-{self.destination}-auth")

    async def _prefetch_credentials(self) -> None:
        # In the background: an unreachable token endpoint must not hold up startup.
        assert self._credentials is not None
        try:
            await self._credentials.authorization()
        except Exception as exc:
            log.warning(
                "cannot obtain upstream credentials yet",
                extra={"destination": self.destination, "error": _safe_error(exc)},
            )

    async def stop(self) -> None:
        """Close the session.  Sends still running resolve what is open as ERRORED ("sink stopped")."""
        if self._prefetch is not None:
            self._prefetch.cancel()
            await asyncio.gather(self._prefetch, return_exceptions=True)
            self._prefetch = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the three delivery pieces (the driver does the rest) --------------------------------

    @property
    def stopped(self) -> bool:
        """True when the sink cannot send: never started, or stopped."""
        return self._session is None or self._session.closed or self._credentials is None

    async def send(self, batch: Batch) -> None:
        """Deliver ``batch`` through this sink's own :class:`~gateway.delivery.driver.DeliveryDriver`
        (the sink used on its own: tests, embedding); the pipeline drives its destination's driver."""
        await self._driver.send(batch)

    def build_request(self, events: list[Event], retried_ids: Sequence[str]) -> PangeaRequest:
        """The ``/v2/log`` body of ``events`` (verbose if any of them wants its envelope), or the
        ``/v1/log`` body of a lone event with ``v1_members``.  A batch's events share one
        credential (:meth:`~gateway.batching.Batch.split`): the gateway's, or a caller's."""
        first = events[0]
        if len(events) == 1 and first.v1_members is not None:
            return PangeaRequest(v1_log_body(first, self.config_id), 1, first.credential, v1=True)
        verbose = any(map(_wants_envelope, events))
        return PangeaRequest(log_body(events, self.config_id, verbose=verbose), len(events), first.credential)

    async def call(self, request: PangeaRequest, retried_ids: list[str]) -> Answer:
        """POST the body, or GET a poll's URL (``request.poll_url``).  The request id of an
        answer that may have stored the events goes to ``retried_ids``."""
        # classify() reads what was sent (a caller's credential, a /v1/log call) from this task's
        # context: the driver calls both in one task, and other workers' tasks keep their own.
        _SENT.set(request)
        caller = _CALLER_AUTHORIZATION.set(request.credential)
        try:
            body = request.body
            # A log call's verbose answer echoes its events (a poll's final answer too).
            bound = _MAX_ANSWER_BYTES + 2 * len(body)
            if request.poll_url is not None:
                answer = await self._get_result(request.poll_url, bound)
            else:
                path = "/v1/log" if request.v1 else self._path
                answer = await self._request("POST", path, path, body, retried_ids, max_answer_bytes=bound)
                if answer.status != 200:  # a 200's request id is not needed, nor its body parsed
                    _note_request_id(answer, retried_ids)
            if answer.status == 200 and not request.v1 and not answer.stored_all(request.count):
                _note_request_id(answer, retried_ids)  # it may have stored them: let it de-duplicate
            return answer
        finally:
            _CALLER_AUTHORIZATION.reset(caller)

    def classify_poll(self, answer: Answer | None, error: BaseException | None) -> Polled[PangeaRequest]:
        """What the answer to the poll :meth:`call` just sent means (:func:`.poll.poll_step`)."""
        polled = _SENT.get()
        assert polled is not None and polled.poll_url is not None  # the driver polls through call()
        return poll_step(self._base, polled, answer, error)

    async def classify(
        self, answer: Answer | None, error: BaseException | None, sent: int, *, at_once_used: bool
    ) -> Outcome:
        """What a ``/v2/log`` answer to ``sent`` events means (see the module doc)."""
        request = _SENT.get()
        v1 = request is not None and request.v1
        if answer is not None and answer.status == 202 and request is not None:
            # Accepted, not finished: the driver polls (the request id is in retried_ids already).
            return pending(self._base, request, answer)
        # Sent with a caller's credential (pass-through): a refusal is the caller's answer, to
        # reject back to it; never a refresh, a pause or a readiness problem of the gateway's.
        caller = request is not None and request.credential is not None
        if v1 and answer is not None and answer.status == 200:
            if answer.pangea_status == "Success" and isinstance(answer.result, dict):
                result = answer.result
                return Delivered(lambda: [result])
        elif answer is not None and answer.status == 200 and answer.stored_all(sent):
            if not caller:
                self._delivered()
            return Delivered(lambda: self._results(answer, sent))
        if caller and answer is not None and (_is_credential_refusal(answer) or _is_config_error(answer)):
            return self._rejected(answer, sent, caller=True)
        if answer is not None and _is_unauthorized(answer) and not at_once_used:
            # The token may have been rotated or revoked: fetch a fresh one, retry once at once.
            await self._credentials_or_raise().invalidate()
            log.info("upstream answered 401; refreshing credentials", extra={"destination": self.destination})
            return Retry("401", answer.describe(), at_once=True)
        if isinstance(error, UpstreamCredentialsRefused):
            await self._credentials_refused(error.message)
            return Retry("credentials", error.message)
        if error is not None:
            what = _safe_error(error)
            if classify(None, error) is Verdict.RETRY:
                return Retry(retry_reason(None, error), what)
            if not isinstance(error, GatewayError | aiohttp.ClientError):
                raise error  # a bug, not the upstream: the driver resolves ERRORED so the source resends
            # Not retriable and no answer: credentials refused, token file missing, bad URL.
            return self._config_error(_error_code(error), what, None)
        assert answer is not None
        what = answer.describe()
        if answer.status == 200:
            return Retry("invalid_answer", what + " without a Success envelope holding one result per event sent")
        if _is_credential_refusal(answer):
            await self._credentials_refused(what)
            return Retry("credentials", what, answer.retry_after)
        if classify(answer.status, None) is Verdict.RETRY:
            return Retry(retry_reason(answer.status, None), what, answer.retry_after)
        return self._rejected(answer, sent)

    def _delivered(self) -> None:
        self._problem = None
        if self._probe_result is not None:
            # A failed probe's answer is stale now: the next check probes again.
            self._probe_at = self._probe_result = None

    def _results(self, answer: Answer, n: int) -> list[Any]:
        """The per-event results of a 200 answer to ``n`` events (``stored_all(n)`` held)."""
        results = answer.results(n)
        if results is None:  # cannot be, once stored_all(n) held
            log.error("upstream 200 without one result per event", extra={"destination": self.destination})
            return [None] * n
        return results

    async def _credentials_refused(self, what: str) -> None:
        """The upstream (or the token endpoint) refused the gateway's own credential: report it
        (readiness), and make the next attempt fetch a fresh one (a rotated token file, a new
        OAuth2 token) so delivery resumes as soon as the credential is fixed."""
        reason = f"{CREDENTIALS_REFUSED} ({what})"[:_MAX_REASON_CHARS]
        if self._problem is None or self._problem.reason != reason:
            log.error(
                "upstream refused the gateway's credentials; events stay queued and are retried",
                extra={"destination": self.destination, "problem": reason},
            )
        self._problem = _Problem(reason, time.monotonic())
        await self._credentials_or_raise().invalidate()

    def _rejected(self, answer: Answer, sent: int, *, caller: bool = False) -> Reject:
        """A non-retriable error answer to ``sent`` events.

        ``caller``: they went with a caller's credential, so a refusal of it (401, 403, a
        configuration it may not use) is the caller's answer, not a problem of the gateway's."""
        status = answer.pangea_status
        if status == "InvalidSchema" and self._on_invalid_schema is not None:
            try:
                self._on_invalid_schema()
            except Exception:
                log.exception("on_invalid_schema callback failed", extra={"destination": self.destination})
        if _is_config_error(answer) and not caller:
            return self._config_error(status or f"HTTP_{answer.status}", answer.describe(), answer)

        code = status or f"HTTP_{answer.status}"
        pointed: dict[int, list[dict[str, Any]]] = {}  # body position → its errors
        others: list[dict[str, Any]] = []
        for err in answer.errors:
            ptr = event_pointer(err.get("source"))
            if ptr is not None and ptr[0] < sent:
                pointed.setdefault(ptr[0], []).append({**err, "source": ptr[1]})
            else:
                others.append(err)
        if pointed and not others:
            # Only some events are bad: reject those, send the rest again (no backoff: the
            # upstream is healthy, it refused content).
            log.warning(
                "upstream rejected some events; resending the rest",
                extra={"destination": self.destination, "rejected": len(pointed), "request_id": answer.request_id},
            )
            return Reject("upstream_rejected", pointed, rest="resend")
        # Errors that point at no event (or none at all): the whole request was refused and would
        # be again, so every event is rejected; pointed ones with their own errors.
        log.warning(
            "upstream rejected the batch",
            extra={"destination": self.destination, "answer": answer.describe(), "request_id": answer.request_id},
        )
        whole = [{"code": code, "detail": answer.describe(), "source": ""}]
        return Reject("upstream_rejected", pointed, others or whole)

    def _config_error(self, code: str, what: str, answer: Answer | None) -> Reject:
        reason = f"{code}: {what}"[:_MAX_REASON_CHARS]
        self._problem = _Problem(reason, time.monotonic())
        log.error(
            "upstream refused our configuration (check token, config_id); events dead-lettered",
            extra={
                "destination": self.destination,
                "config_id": self.config_id,
                "problem": reason,
                "request_id": answer.request_id if answer is not None else None,
            },
        )
        return Reject("config_error", others=[{"code": code, "detail": what, "source": ""}])

    def _stopped(self) -> bool:
        return self._session is None or self._session.closed

    def _count_poll(self, outcome: str) -> None:
        self._metrics.upstream_polls.labels(self.destination, outcome).inc()

    async def _get_result(self, url: str, max_answer_bytes: int) -> Answer:
        """One poll: ``GET url`` for an accepted request's result."""
        answer = await self._request("GET", url, "/request", None, (), max_answer_bytes=max_answer_bytes)
        if _is_unauthorized(answer) and _CALLER_AUTHORIZATION.get() is None:
            # Same rule as for sends: one refresh, then the answer stands.
            await self._credentials_or_raise().invalidate()
            answer = await self._request("GET", url, "/request", None, (), max_answer_bytes=max_answer_bytes)
        return answer

    # -- HTTP ----------------------------------------------------------------------------

    def _credentials_or_raise(self) -> Credentials:
        if self._credentials is None:
            raise RuntimeError("PangeaSink used before start()")
        return self._credentials

    async def _request(
        self,
        method: str,
        url_or_path: str,
        endpoint: str,
        body: bytes | None,
        retried_ids: Sequence[str],
        *,
        total_secs: float | None = None,
        max_answer_bytes: int = _MAX_ANSWER_BYTES,
    ) -> Answer:
        """One upstream call, measured.  Raises network errors as aiohttp/asyncio raise them.

        The answer is read up to ``max_answer_bytes``; a larger one is left unread (the
        connection closed) and comes back ``oversized`` with no body."""
        session = self._session
        if session is None or session.closed:
            raise ShutdownError("the upstream sink is stopped")
        authorization = _CALLER_AUTHORIZATION.get() or await self._credentials_or_raise().authorization()
        url = url_or_path if "://" in url_or_path else join_url(self._base, url_or_path)
        headers = request_headers(authorization, retried_ids, json_body=body is not None)
        gauge = self._metrics.upstream_in_flight.labels(self.destination)
        label = "error"
        started = time.perf_counter()
        gauge.inc()
        extra: dict[str, Any] = {} if total_secs is None else {"timeout": aiohttp.ClientTimeout(total=total_secs)}
        try:
            async with session.request(method, url, data=body, headers=headers, **extra) as resp:
                label = str(resp.status)
                raw = await _read_bounded(resp, max_answer_bytes)
                if raw is None:
                    return parse_answer(resp.status, b"", resp.headers, oversized=True)
                return parse_answer(resp.status, raw, resp.headers)
        finally:
            gauge.dec()
            self._metrics.upstream_requests.labels(endpoint, label).inc()
            self._metrics.upstream_duration.labels(endpoint, label).observe(time.perf_counter() - started)

    # -- schema --------------------------------------------------------------------------

    async def fetch_schema(self, *, attempts: int | None = 5) -> list[SchemaFieldConfig]:
        """The destination's schema fields from ``POST /v1/schema {config_id}`` (``schema: upstream``).

        Transient failures are retried with the sink's backoff, ``attempts`` times in all (None:
        until cancelled).  Raises :class:`~gateway.errors.UpstreamConfigError` for configuration
        errors (AmbiguousConfigID...), :class:`~gateway.errors.UpstreamCredentialsRefused` when
        the credential is refused (after one refresh), :class:`~gateway.errors.RetriableUpstreamError`
        when the upstream stayed unavailable, :class:`~gateway.errors.RejectedUpstreamError` for any
        other refusal or a schema this gateway cannot use.
        """
        body = orjson.dumps({"config_id": self.config_id} if self.config_id is not None else {})
        retry_cfg = self.upstream.retry
        failures = 0
        refreshed = False
        while True:
            answer: Answer | None = None
            try:
                answer = await self._request("POST", "/v1/schema", "/v1/schema", body, ())
                if answer.status == 202:  # slow: any call may be accepted and polled
                    answer = await self._poll_schema(answer)
                what, verdict = answer.describe(), classify(answer.status, None)
            except Exception as exc:
                if self._stopped():
                    raise ShutdownError("the upstream sink is stopped") from None
                what, verdict = _safe_error(exc), classify(None, exc)
                if verdict is Verdict.REJECT:
                    if isinstance(exc, aiohttp.ClientError):  # e.g. an invalid URL
                        raise UpstreamConfigError(f"/v1/schema: {what}") from None
                    raise  # a configuration error (UpstreamConfigError), or a bug
            if answer is not None and answer.status == 200:
                fields = _schema_fields(answer)
                if fields is not None:
                    return fields
                # Not a schema: a proxy or a wrong URL answered; retried like a 5xx.
                what += " without a Success envelope holding result.fields"
                verdict = Verdict.RETRY
            if answer is not None and _is_unauthorized(answer) and not refreshed:
                refreshed = True
                await self._credentials_or_raise().invalidate()
                continue
            if answer is not None and _is_credential_refusal(answer):
                raise UpstreamCredentialsRefused(
                    f"/v1/schema: {what}", http_status=answer.status, pangea_status=answer.pangea_status
                )
            if verdict is Verdict.RETRY:
                failures += 1
                if attempts is not None and failures >= attempts:
                    raise RetriableUpstreamError(f"/v1/schema unavailable after {failures} attempts: {what}")
                await self._sleep(
                    backoff_secs(
                        failures - 1,
                        retry_cfg.initial_backoff_secs,
                        retry_cfg.max_backoff_secs,
                        answer.retry_after if answer is not None else None,
                    )
                )
                continue
            assert answer is not None
            if _is_config_error(answer):
                raise UpstreamConfigError(
                    f"/v1/schema: {what}", http_status=answer.status, pangea_status=answer.pangea_status
                )
            raise RejectedUpstreamError(
                f"/v1/schema: {what}", http_status=answer.status, pangea_status=answer.pangea_status
            )

    async def _poll_schema(self, accepted: Answer) -> Answer:
        """The final answer of a 202 to ``/v1/schema``, through the one poll loop (not a delivery:
        no batch, so no driver).  Raises what the last poll raised, or PollGaveUp (retriable)."""
        # An empty body: the poll's answer is read up to the plain bound, as any schema answer.
        sent = PangeaRequest(b"", 0)
        answer, error = await poll_until_final(
            self,
            pending(self._base, sent, accepted),
            self.upstream.poll,
            [],
            count=self._count_poll,
            sleep=self._sleep,
            clock=self._clock,
        )
        if error is not None:
            raise error
        assert answer is not None
        return answer

    # -- readiness -----------------------------------------------------------------------

    @property
    def credentials_refused(self) -> bool:
        """True while the last word on the gateway's credential is a refusal (see :class:`Sink`)."""
        # Either a send or the readiness probe may be first to see the refusal; intake must
        # answer 503 (our fault) as soon as readiness says so, not 429.
        problem = self._problem
        if problem is not None and problem.reason.startswith(CREDENTIALS_REFUSED):
            return True
        probe = self._probe_result
        return probe is not None and probe.startswith(CREDENTIALS_REFUSED)

    async def check(self) -> str | None:
        """None when the upstream is reachable and accepts our token and config_id; else why not.

        Probes ``POST /v1/schema {config_id}`` at most every few seconds; a configuration problem
        seen by ``send`` is reported until a later call succeeds.  Never raises.
        """
        try:
            probe = await self._cached_probe()
        except Exception as exc:  # the contract: never raise
            probe = f"check failed: {_safe_error(exc)}"
        problem = self._problem
        if problem is None:
            return probe
        if probe is None and time.monotonic() - problem.seen_at >= _PROBLEM_HOLD_SECS:
            self._problem = None
            return None
        return problem.reason

    async def _cached_probe(self) -> str | None:
        if self._stopped():
            return "upstream sink not running"
        async with self._probe_lock:  # concurrent readiness checks share one probe
            now = time.monotonic()
            if self._probe_at is not None and now - self._probe_at < _CHECK_TTL_SECS:
                return self._probe_result
            result = await self._probe()
            self._probe_result, self._probe_at = result, time.monotonic()
            return result

    async def _probe(self) -> str | None:
        body = orjson.dumps({"config_id": self.config_id} if self.config_id is not None else {})
        timeout = min(self.upstream.timeout_secs, _PROBE_TIMEOUT_SECS)
        try:
            answer = await self._request("POST", "/v1/schema", "/v1/schema", body, (), total_secs=timeout)
            if _is_unauthorized(answer):
                await self._credentials_or_raise().invalidate()
                answer = await self._request("POST", "/v1/schema", "/v1/schema", body, (), total_secs=timeout)
        except UpstreamCredentialsRefused as exc:  # our messages: statuses and codes only
            return f"{CREDENTIALS_REFUSED} ({exc.message})"[:_MAX_REASON_CHARS]
        except GatewayError as exc:  # credentials: our messages, secret-free
            return f"credentials: {exc.message}"[:_MAX_REASON_CHARS]
        except Exception as exc:
            if classify(None, exc) is Verdict.RETRY:
                return f"upstream unreachable: {_safe_error(exc)}"[:_MAX_REASON_CHARS]
            return f"upstream call failed: {_safe_error(exc)}"[:_MAX_REASON_CHARS]
        if answer.status == 202:  # the upstream took our token and config_id
            return None
        if answer.status == 200:
            if answer.pangea_status == "Success":
                return None
            return f"upstream answered {answer.describe()} without a Success envelope"[:_MAX_REASON_CHARS]
        if _is_credential_refusal(answer):
            return f"{CREDENTIALS_REFUSED} ({answer.describe()})"[:_MAX_REASON_CHARS]
        if _is_config_error(answer):
            return f"{answer.pangea_status or f'HTTP_{answer.status}'}: {answer.describe()}"[:_MAX_REASON_CHARS]
        if classify(answer.status, None) is Verdict.RETRY:
            return f"upstream unavailable: {answer.describe()}"[:_MAX_REASON_CHARS]
        return f"upstream refused /v1/schema: {answer.describe()}"[:_MAX_REASON_CHARS]


_SCHEMA_FIELD_KEYS = frozenset(SchemaFieldConfig.model_fields)


def _schema_fields(answer: Answer) -> list[SchemaFieldConfig] | None:
    """``result.fields`` as this gateway's field configs; keys it does not use (name,
    description...) are ignored.  None when the answer is no Success envelope with a
    ``result.fields`` list; raises RejectedUpstreamError on a schema this gateway cannot use."""
    if answer.oversized or answer.pangea_status != "Success":
        return None
    result = answer.result
    fields = result.get("fields") if result else None
    if not isinstance(fields, list):
        return None
    if not fields:
        raise RejectedUpstreamError("/v1/schema answered without fields", http_status=answer.status)
    out = []
    for i, f in enumerate(fields):
        if not isinstance(f, dict):
            raise RejectedUpstreamError(f"/v1/schema: field {i} is not an object")
        data = {k: v for k, v in f.items() if k in _SCHEMA_FIELD_KEYS and v is not None}
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            data.pop("size", None)  # the upstream gives `size: 0` (no limit) and sizes on non-string fields
        try:
            out.append(SchemaFieldConfig.model_validate(data))
        except ValidationError as exc:
            raise RejectedUpstreamError(
                f"/v1/schema: field {f.get('id')!r} is unusable: {exc.errors()[0]['msg']}"
            ) from None
    return out


def _note_request_id(answer: Answer, retried_ids: list[str]) -> None:
    """Remember an attempt's request id, for the retry header of the next attempts."""
    rid = answer.request_id
    if rid and rid not in retried_ids:
        retried_ids.append(rid)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body of ``resp``, or None if it is longer than ``limit`` bytes (the rest left unread)."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    if resp.content_length is not None:
        return await resp.read()  # the common case: one read of a known, bounded size
    buf = bytearray()
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def _is_unauthorized(answer: Answer) -> bool:
    return answer.status == 401 or answer.pangea_status == "Unauthorized"


def _is_credential_refusal(answer: Answer) -> bool:
    """The upstream refused the gateway's own credential: 401 or ``Unauthorized``, or a 403
    that does not name an event (a ForbiddenFieldValue 403 refuses a field value of an event)."""
    if _is_unauthorized(answer):
        return True
    return answer.status == 403 and answer.pangea_status != "ForbiddenFieldValue"


def _is_config_error(answer: Answer) -> bool:
    return answer.pangea_status in CONFIG_ERROR_STATUSES


def _error_code(exc: BaseException) -> str:
    return type(exc).__name__


def _safe_error(exc: BaseException) -> str:
    """A loggable description of ``exc``: our own errors' messages (secret-free by construction),
    else the type and message of network errors (hosts and ports, never headers)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
