"""Credentials for the upstream: a static service token, a token file, or OAuth2 client credentials.

Secrets are held as :class:`~pydantic.SecretStr` and leave this module only inside the
``Authorization`` header value :meth:`Credentials.authorization` returns.  They never reach a
log line, an exception message or a metric label; reprs are masked.

Every secret is registered with :mod:`gateway.telemetry.redact` as it becomes known (the
configured token or client secret and its Basic-auth value, a token file's token, each OAuth2
access token), so a peer that echoes one back cannot get it into a log line.

Errors: a transient failure to obtain credentials (token endpoint down, 5xx) raises
:class:`~gateway.errors.RetriableUpstreamError`; a refusal (client refused, token file missing
or empty, unusable token answer) raises :class:`~gateway.errors.UpstreamCredentialsRefused`:
the gateway's own fault, retried until fixed.  Messages carry HTTP statuses and OAuth2 error
codes only, never the token endpoint's text (``error_description`` may echo the request).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
from pydantic import SecretStr

from gateway.delivery.retry import Verdict, classify
from gateway.errors import RetriableUpstreamError, UpstreamConfigError, UpstreamCredentialsRefused
from gateway.sinks.pangea.config import OAuth2Config, UpstreamConfig
from gateway.sinks.pangea.request_builder import error_code
from gateway.telemetry import redact
from gateway.telemetry.metrics import Metrics

__all__ = [
    "Credentials",
    "OAuth2ClientCredentials",
    "StaticToken",
    "TokenFile",
    "credentials_from_config",
]

log = logging.getLogger(__name__)


class Credentials(Protocol):
    """A source of ``Authorization`` header values for upstream calls."""

    async def authorization(self) -> str:
        """The header value, ``"Bearer <token>"``; fetches or re-reads the token when needed."""
        ...

    async def invalidate(self) -> None:
        """The upstream refused the current token (401): obtain a fresh one on the next call."""
        ...


class StaticToken:
    """A service token from the configuration; ``invalidate`` cannot help and does nothing."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token
        redact.register(token)

    def __repr__(self) -> str:
        return "StaticToken(token=***)"

    async def authorization(self) -> str:
        return "Bearer " + self._token.get_secret_value()

    async def invalidate(self) -> None:
        return None


class TokenFile:
    """A token read from a file and re-read when the file changes.

    Kubernetes rotates a mounted Secret by swapping a symlink, so the file's identity
    (inode, device), mtime and size change; those are checked at most every
    ``min_check_interval_secs`` (a ``stat`` off the event loop), and the file is re-read
    when they differ.  Surrounding whitespace (the trailing newline of ``echo``) is stripped.
    If the file disappears or empties after a token was read, the last token is kept (and a
    warning logged) rather than failing every call during a botched rotation.
    """

    def __init__(
        self,
        path: Path,
        metrics: Metrics | None = None,
        *,
        min_check_interval_secs: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._metrics = metrics
        self._interval = min_check_interval_secs
        self._clock = clock
        self._token: SecretStr | None = None
        self._key: tuple[int, int, int, int] | None = None
        self._checked_at = 0.0
        self._stale = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"TokenFile(path={str(self.path)!r})"

    async def authorization(self) -> str:
        if self._token is None or self._stale or self._clock() - self._checked_at >= self._interval:
            async with self._lock:
                if self._token is None or self._stale or self._clock() - self._checked_at >= self._interval:
                    await asyncio.to_thread(self._reload_if_changed)
        assert self._token is not None  # _reload_if_changed raises instead of leaving it unset
        return "Bearer " + self._token.get_secret_value()

    async def invalidate(self) -> None:
        # The token may have been rotated upstream before the Secret update reached us:
        # re-read now rather than at the next interval.
        self._stale = True

    def _reload_if_changed(self) -> None:
        reason = "initial" if self._token is None else ("invalidated" if self._stale else "file_changed")
        self._checked_at = self._clock()
        self._stale = False
        try:
            st = os.stat(self.path)
            key = (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)
            if key == self._key and self._token is not None:
                return
            text = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            return self._keep_or_fail(f"token file {str(self.path)!r} cannot be read: {exc.strerror}")
        if not text:
            return self._keep_or_fail(f"token file {str(self.path)!r} is empty")
        changed = self._token is None or self._token.get_secret_value() != text
        redact.register(text)
        self._key = key
        self._token = SecretStr(text)
        if changed or reason == "initial":
            if self._metrics is not None:
                self._metrics.auth_token_refreshes.labels(reason).inc()
            log.info("upstream token loaded from file", extra={"path": str(self.path), "reason": reason})

    def _keep_or_fail(self, message: str) -> None:
        if self._token is None:
            raise UpstreamCredentialsRefused(message)
        log.warning("%s; keeping the previous token", message)


class OAuth2ClientCredentials:
    """OAuth2 Client Credentials grant with HTTP Basic client authentication.

    ``POST token_url`` with ``Authorization: Basic base64(client_id:client_secret)`` and the
    form ``grant_type=client_credentials`` (+ ``scope``); the answer
    ``{access_token, token_type, expires_in, scope}`` is cached and refreshed
    ``refresh_before_expiry_secs`` before it expires (at the latest half way through its
    lifetime, so short-lived tokens are not fetched on every call).  Fetches are single-flight:
    concurrent callers wait for one request.  If a refresh fails while the cached token has
    not yet expired, the cached token is used and the refresh retried on the next call.
    """

    def __init__(
        self,
        config: OAuth2Config,
        session: aiohttp.ClientSession,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._session = session
        self._metrics = metrics
        self._clock = clock
        self._token: SecretStr | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._stale = False
        self._lock = asyncio.Lock()
        redact.register(config.client_secret, self._basic())

    def _basic(self) -> str:
        cfg = self._config
        return redact.basic_credentials(cfg.client_id, cfg.client_secret.get_secret_value())

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials(token_url={self._config.token_url!r}, client_id={self._config.client_id!r})"

    def _usable(self) -> bool:
        return self._token is not None and not self._stale and self._clock() < self._refresh_at

    async def authorization(self) -> str:
        if not self._usable():
            async with self._lock:
                if not self._usable():  # another caller may have refreshed while we waited
                    await self._refresh()
        assert self._token is not None  # _refresh raises instead of leaving it unset
        return "Bearer " + self._token.get_secret_value()

    async def invalidate(self) -> None:
        self._stale = True

    async def _refresh(self) -> None:
        reason = "initial" if self._token is None else ("invalidated" if self._stale else "expiring")
        try:
            token, expires_in = await self._fetch()
        except RetriableUpstreamError:
            if self._token is not None and not self._stale and self._clock() < self._expires_at:
                log.warning("OAuth2 token refresh failed; using the cached token until it expires")
                return
            raise
        now = self._clock()
        self._token = token
        self._stale = False
        if expires_in is None:
            self._expires_at = self._refresh_at = float("inf")
        else:
            early = max(self._config.refresh_before_expiry_secs, 0.0)
            self._expires_at = now + expires_in
            self._refresh_at = now + max(expires_in - early, expires_in / 2)
        if self._metrics is not None:
            self._metrics.auth_token_refreshes.labels(reason).inc()
        log.info("OAuth2 access token obtained", extra={"reason": reason, "expires_in": expires_in})

    async def _fetch(self) -> tuple[SecretStr, float | None]:
        cfg = self._config
        form = {"grant_type": "client_credentials"}
        if cfg.scope:
            form["scope"] = cfg.scope
        # HTTP Basic as the seed documents it: base64("client_id:client_secret"), built here
        # rather than with aiohttp.BasicAuth (deprecated in aiohttp 3.14).
        headers = {"Authorization": f"Basic {self._basic()}", "Accept": "application/json"}
        try:
            async with self._session.post(cfg.token_url, data=form, headers=headers) as resp:
                status = resp.status
                raw = await resp.read()
        except Exception as exc:
            # `from None`: aiohttp exceptions can carry the request (and its Basic header).
            if classify(None, exc) is Verdict.RETRY:
                raise RetriableUpstreamError(f"OAuth2 token endpoint unreachable: {type(exc).__name__}") from None
            raise UpstreamConfigError(f"OAuth2 token request failed: {type(exc).__name__}") from None
        body = _json_object(raw)
        if status != 200:
            # The status and the RFC 6749 error code only: error_description is the endpoint's
            # free text, and an endpoint that echoes its request would put our secret in it.
            what = f"HTTP {status}"
            code = error_code(body.get("error")) if body is not None else None
            if code is not None:
                what += f" {code}"
            if classify(status, None) is Verdict.RETRY:
                raise RetriableUpstreamError(f"OAuth2 token endpoint failed: {what}", http_status=status)
            raise UpstreamCredentialsRefused(f"OAuth2 token endpoint refused the client: {what}", http_status=status)
        if body is None:
            raise UpstreamCredentialsRefused("OAuth2 token endpoint answered without a JSON object")
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise UpstreamCredentialsRefused("OAuth2 token endpoint answered without access_token")
        redact.register(access)
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise UpstreamCredentialsRefused("OAuth2 token endpoint issued a token_type other than Bearer")
        return SecretStr(access), _seconds(body.get("expires_in"))


def _seconds(value: object) -> float | None:
    """``expires_in`` as seconds; some servers send it as a string.  None when absent or invalid."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        secs = float(value)
    except ValueError:
        return None
    return secs if secs == secs and secs >= 0 else None  # drop NaN and negatives


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def credentials_from_config(upstream: UpstreamConfig, session: aiohttp.ClientSession, metrics: Metrics) -> Credentials:
    """The credentials the configuration names (exactly one of token, token_file, oauth2)."""
    if upstream.token is not None:
        return StaticToken(upstream.token)
    if upstream.token_file is not None:
        return TokenFile(upstream.token_file, metrics)
    if upstream.oauth2 is not None:
        return OAuth2ClientCredentials(upstream.oauth2, session, metrics)
    raise UpstreamConfigError("upstream: no credentials configured")  # the config validator prevents this
