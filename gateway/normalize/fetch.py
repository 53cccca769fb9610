"""Fetch a configuration's schema from the upstream: ``POST /v1/schema``.

The answer's ``result`` is an ``AuditSchema`` (``{fields: [{id, type, required, size, redact,
name, description, ...}], ...}``); the fields become :class:`SchemaFieldConfig` for
:meth:`gateway.normalize.schema.Schema.from_fields`.

It speaks to the upstream exactly as the sink does, through the sink's shared pieces: answers
are read by :func:`~gateway.sinks.pangea.request_builder.parse_answer`, a 202 is polled by
:func:`~gateway.sinks.pangea.poll.poll_until_done`, and failures are sorted by the one
classifier, :func:`~gateway.sinks.pangea.retry.classify`:

* retriable (network errors, timeouts, 408, 429, 5xx but 501, polling that gave up):
  :class:`RetriableUpstreamError` (``retry_after_secs`` from ``Retry-After``);
* any other refusal (401, ``MissingConfigID``, ``AmbiguousConfigID``, a 400 on the config id...):
  :class:`UpstreamConfigError` -- the configuration needs fixing;
* a 200 whose body is not a schema: :class:`UpstreamError` (not retriable).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from pydantic import ValidationError

from gateway.errors import RetriableUpstreamError, UpstreamConfigError, UpstreamError
from gateway.normalize.config import SchemaFieldConfig
from gateway.sinks.pangea.config import PollConfig
from gateway.sinks.pangea.poll import poll_until_done
from gateway.sinks.pangea.request_builder import Answer, join_url, parse_answer, request_headers
from gateway.sinks.pangea.retry import Verdict, classify

__all__ = ["fetch_schema"]

_FIELD_KEYS = ("id", "type", "required", "size", "redact")


def _field(raw: Any, i: int) -> SchemaFieldConfig:
    if not isinstance(raw, dict):
        raise UpstreamError(f"/v1/schema: result.fields[{i}] is not an object")
    data = {k: raw[k] for k in _FIELD_KEYS if raw.get(k) is not None}
    size = data.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        data.pop("size", None)  # the upstream may give 0 or a size on non-string fields
    try:
        return SchemaFieldConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UpstreamError(f"/v1/schema: result.fields[{i}].{where}: {first['msg']}") from None


def _fields(answer: Answer) -> list[SchemaFieldConfig]:
    if answer.body is None:
        raise UpstreamError("/v1/schema: the answer is not a JSON object")
    result = answer.result
    fields = result.get("fields") if result is not None else None
    if not isinstance(fields, list):
        raise UpstreamError("/v1/schema: the answer has no result.fields array")
    if not fields:
        raise UpstreamError("/v1/schema: the configuration's schema has no fields")
    return [_field(f, i) for i, f in enumerate(fields)]


def _failure(answer: Answer) -> UpstreamError:
    message = f"/v1/schema: {answer.describe()}"
    kind = RetriableUpstreamError if classify(answer.status, None) is Verdict.RETRY else UpstreamConfigError
    return kind(
        message,
        http_status=answer.status,
        pangea_status=answer.pangea_status,
        retry_after_secs=answer.retry_after,
        body=answer.body,
    )


async def fetch_schema(
    session: aiohttp.ClientSession,
    base_url: str,
    authorization: str,
    config_id: str | None,
    *,
    timeout_secs: float = 30.0,
    poll: PollConfig | None = None,
) -> list[SchemaFieldConfig]:
    """The fields of ``config_id``'s schema (the token's only configuration when ``None``).

    ``authorization`` is the whole ``Authorization`` header value (``Bearer <token>``).
    ``timeout_secs`` bounds each HTTP call; ``poll`` (the destination's ``upstream.poll``)
    paces and bounds the polling of a 202.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_secs)

    async def call(method: str, url: str, body: bytes | None) -> Answer:
        headers = request_headers(authorization, (), json_body=body is not None)
        try:
            async with session.request(method, url, data=body, headers=headers, timeout=timeout) as resp:
                return parse_answer(resp.status, await resp.read(), resp.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if classify(None, exc) is Verdict.RETRY:
                raise RetriableUpstreamError(f"/v1/schema: {type(exc).__name__}: {exc}") from None
            raise UpstreamConfigError(f"/v1/schema: {type(exc).__name__}: {exc}") from None

    async def get(url: str) -> Answer:
        return await call("GET", url, None)

    payload = orjson.dumps({"config_id": config_id} if config_id else {})
    answer = await call("POST", join_url(base_url, "/v1/schema"), payload)
    if answer.status == 202:
        # Raises PollGaveUp (a RetriableUpstreamError) at the deadline or when the request is lost.
        answer = await poll_until_done(get, base_url, answer, poll or PollConfig())
    if answer.status != 200:
        raise _failure(answer)
    return _fields(answer)
