"""Shapes of the upstream exchange: request headers and URLs, parsed answers, error pointers.

Pure functions and plain data, so the sink and the poller share one reading of the
Pangea response envelope ``{request_id, request_time, response_time, status, summary, result}``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import msgspec
import orjson

from gateway.delivery.retry import parse_retry_after
from gateway.event import Event, item_of

__all__ = [
    "RETRIED_HEADER",
    "USER_AGENT",
    "Answer",
    "PangeaRequest",
    "error_code",
    "event_pointer",
    "join_url",
    "log_body",
    "parse_answer",
    "request_headers",
    "resolve_location",
    "same_origin",
    "v1_log_body",
]

RETRIED_HEADER = "X-Pangea-Retried-Request-Ids"
"""Sent on a retry with the request ids of earlier attempts, so the upstream can de-duplicate."""

USER_AGENT = "audit-gateway/0.1"


@dataclass(slots=True, frozen=True)
class PangeaRequest:
    """One ``/v2/log`` request: its body and how many events it carries (or a poll of its result)."""

    body: bytes
    count: int
    credential: str | None = None
    """A caller's ``Authorization`` to send it with (pass-through, issue 14); None: the gateway's."""
    v1: bool = False
    """A ``/v1/log`` call (one event with ``v1_members``: its answer carries the proofs the SDK checks)."""
    poll_url: str | None = None
    """Set on a poll: ``GET`` this URL for the result of the accepted request whose body, count,
    credential and kind this keeps (its final answer is classified as that request's)."""

    @property
    def nbytes(self) -> int:
        return len(self.body)


def log_body(events: Sequence[Event], config_id: str | None, *, verbose: bool = False) -> bytes:
    """The ``/v2/log`` body of ``events``, built by joining their item bytes (never re-serialized)."""
    tail = b"]"
    if config_id is not None:
        tail += b',"config_id":' + orjson.dumps(config_id)
    if verbose:
        tail += b',"verbose":true'
    return b'{"events":[' + b",".join(map(item_of, events)) + tail + b"}"


def v1_log_body(event: Event, config_id: str | None) -> bytes:
    """The ``/v1/log`` body of one event with ``v1_members`` (its item with ``verbose``/``prev_root``)."""
    tail = event.v1_members or b""
    if config_id is not None:
        tail += b',"config_id":' + orjson.dumps(config_id)
    return event.item[:-1] + tail + b"}"


_EVENT_POINTER = re.compile(r"^/events/(\d+)(/.*)?$")
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
"""What an error code looks like (``ValidationError``, ``invalid_client``); other text is not one."""


def error_code(value: object) -> str | None:
    """``value`` if it is shaped like an error code, else None: a peer's free text never passes."""
    return value if isinstance(value, str) and _CODE.match(value) else None


class _Result(msgspec.Struct, gc=False):
    """One per-event result: an object (its fields are not read here; ``hash``, ``envelope``...)."""


class _Results(msgspec.Struct, gc=False):
    results: list[_Result]


class _LogSuccess(msgspec.Struct, gc=False):
    """The part of a ``/v2/log`` 200 answer that says the events were stored."""

    status: str
    result: _Results


_log_success = msgspec.json.Decoder(_LogSuccess)


class _RawResults(msgspec.Struct, gc=False):
    results: list[msgspec.Raw]


class _LogResultsRaw(msgspec.Struct, gc=False):
    """The per-event results of a ``/v2/log`` answer, each kept as its JSON text."""

    result: _RawResults


_log_results_raw = msgspec.json.Decoder(_LogResultsRaw)
_ENVELOPE_MEMBER = b'"envelope"'


class Answer:
    """One upstream HTTP answer; its JSON body is parsed on first use, and once.

    A delivered batch whose receivers keep no per-event results (Kafka offsets, spool rows)
    never reads it: a 1000-event ``/v2/log`` answer takes ~0.15 ms to parse.
    """

    __slots__ = ("_body", "_header_request_id", "_stored", "oversized", "retry_after", "status")

    def __init__(self, status: int, raw: bytes, headers: Mapping[str, str], *, oversized: bool = False) -> None:
        self.status = status
        """HTTP status."""
        self.retry_after: float | None = parse_retry_after(headers.get("Retry-After"))
        """Seconds from a ``Retry-After`` header, if any."""
        self._header_request_id = headers.get("x-request-id") or None
        self._body: dict[str, Any] | bytes | None = raw  # the raw bytes until parsed
        self.oversized = oversized
        """The body was larger than the caller's bound and was not read (``raw`` is empty)."""
        self._stored: tuple[int, bool] | None = None  # stored_all's last (n, answer): asked twice per send

    def stored_all(self, n: int) -> bool:
        """Whether this is a 200 whose body is a Pangea ``Success`` envelope with ``n`` per-event
        results (``result.results``, objects): the only proof the upstream stored ``n`` events.

        Cheap on the hot path: one C-level pass that counts the results without building them
        (the body is still parsed lazily, and only if a receiver wants the results).
        """
        if self.status != 200 or self.oversized:
            return False
        stored = self._stored
        if stored is not None and stored[0] == n:
            return stored[1]
        ok = self._stored_all(n)
        self._stored = (n, ok)
        return ok

    def _stored_all(self, n: int) -> bool:
        body = self._body
        if isinstance(body, bytes):
            try:
                shape = _log_success.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return False
            return shape.status == "Success" and len(shape.result.results) == n
        # Already parsed (a poll's answer, or a caller read a field): check the dict.
        if body is None or body.get("status") != "Success":
            return False
        result = body.get("result")
        parsed = result.get("results") if isinstance(result, dict) else None
        return isinstance(parsed, list) and len(parsed) == n and all(isinstance(r, dict) for r in parsed)

    def results(self, n: int) -> list[Any] | None:
        """The ``n`` per-event results of a 200 whose :meth:`stored_all` held, else None.

        Each as the upstream wrote it: a :class:`msgspec.Raw` of its JSON text (spliced as it
        is into a sender's answer, no dict built per event), or a dict when some result carries
        an ``envelope`` (a verbose call: the answer of a sender that did not ask for it leaves
        the envelope out, so it must be read).
        """
        if not self.stored_all(n):
            return None
        body = self._body
        if isinstance(body, bytes) and _ENVELOPE_MEMBER not in body:
            # Issue 18: parsing 1,000 results into dicts cost ~6 % of a /v2/log gateway's CPU
            # (orjson 93 us); as JSON texts, 38 us.  Only a receiver keeping results asks: a
            # Kafka batch's answer is only checked (stored_all, 43 us).
            raw: list[Any] = _log_results_raw.decode(body).result.results
            return raw
        result = self.result
        results = result.get("results") if result else None
        return results if isinstance(results, list) and len(results) == n else None

    @property
    def body(self) -> dict[str, Any] | None:
        """The JSON envelope, or None when the body was not a JSON object."""
        body = self._body
        if isinstance(body, bytes):
            parsed = None
            if body:
                with contextlib.suppress(orjson.JSONDecodeError):
                    parsed = orjson.loads(body)
            body = self._body = parsed if isinstance(parsed, dict) else None
        return body

    @property
    def request_id(self) -> str | None:
        """The envelope's ``request_id`` (else the ``x-request-id`` header the SDK reads)."""
        rid = self.body.get("request_id") if self.body else None
        return rid if isinstance(rid, str) and rid else self._header_request_id

    @property
    def pangea_status(self) -> str | None:
        """The envelope's ``status`` (``Success``, ``ValidationError``, ``AmbiguousConfigID``...),
        when it is shaped like a status code (free text is not one)."""
        return error_code(self.body.get("status")) if self.body else None

    @property
    def summary(self) -> str:
        s = self.body.get("summary") if self.body else None
        return s if isinstance(s, str) else ""

    @property
    def result(self) -> dict[str, Any] | None:
        r = self.body.get("result") if self.body else None
        return r if isinstance(r, dict) else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        """``result.errors`` (validation errors ``{code, detail, source, path?}``), dicts only."""
        r = self.result
        errs = r.get("errors") if r else None
        if not isinstance(errs, list):
            return []
        return [e for e in errs if isinstance(e, dict)]

    def describe(self) -> str:
        """A short description for logs, ack reasons and readiness: the HTTP status and the
        Pangea status code only.  Never the upstream's ``summary`` or any other text of its
        answer, which may echo anything (our own request and credential included)."""
        parts = [f"HTTP {self.status}"]
        if self.pangea_status:
            parts.append(self.pangea_status)
        if self.oversized:
            parts.append("(answer too large)")
        return " ".join(parts)


def parse_answer(status: int, raw: bytes, headers: Mapping[str, str], *, oversized: bool = False) -> Answer:
    """The answer of a response; a non-JSON body (a proxy's HTML error page) gives ``body=None``."""
    return Answer(status, raw, headers, oversized=oversized)


def join_url(base: str, path: str) -> str:
    """``base`` (no trailing slash, may carry a path prefix) + ``path`` (leading slash)."""
    return base.rstrip("/") + "/" + path.lstrip("/")


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port (default ports made explicit)."""
    sa, sb = urlsplit(a), urlsplit(b)

    def port(s: Any) -> int | None:
        p: int | None = s.port
        if p is not None:
            return p
        return {"http": 80, "https": 443}.get(s.scheme)

    return (
        sa.scheme.lower() == sb.scheme.lower()
        and (sa.hostname or "").lower() == (sb.hostname or "").lower()
        and port(sa) == port(sb)
    )


def resolve_location(base: str, location: str) -> str:
    """Resolve a (relative or absolute) ``location`` against ``base`` (RFC 3986 rules)."""
    return urljoin(base.rstrip("/") + "/", location)


def request_headers(authorization: str, retried_ids: Sequence[str], *, json_body: bool) -> dict[str, str]:
    """Headers of one upstream call; the retried-ids header only when there were earlier attempts."""
    h = {"Authorization": authorization}
    if json_body:
        h["Content-Type"] = "application/json"
    if retried_ids:
        h[RETRIED_HEADER] = ",".join(retried_ids)
    return h


def event_pointer(source: object) -> tuple[int, str] | None:
    """Split a JSON pointer ``/events/N/rest`` into ``(N, "/rest")``; None when not an event's."""
    if not isinstance(source, str):
        return None
    m = _EVENT_POINTER.match(source)
    if m is None:
        return None
    return int(m.group(1)), m.group(2) or ""
