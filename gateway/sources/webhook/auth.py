"""Inbound authentication of webhook routes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from gateway.errors import AuthError
from gateway.sources.webhook.config import WebhookAuth


def header_bytes(value: str) -> bytes:
    """A header value as the bytes received, whatever they are.

    aiohttp decodes header bytes as UTF-8 with ``surrogateescape``; a plain ``.encode()`` raises
    on bytes that were not UTF-8 and would turn a wrong credential into a 500.
    """
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no received byte stands for: never a match
        return value.encode("utf-8", "backslashreplace")


def check_header(request: web.Request, auth: WebhookAuth | None) -> None:
    """Shared-value header auth (Auth0 `Authorization`, Okta, Pangea SDK bearer tokens)."""
    if auth is None or auth.value is None:
        return
    given = request.headers.get(auth.header, "")
    if not hmac.compare_digest(header_bytes(given), auth.value.get_secret_value().encode()):
        raise AuthError("missing or invalid credentials")


def check_hmac_sha256(raw: bytes, signature_header: str | None, secret: str) -> None:
    """GitHub-style ``sha256=<hex>`` HMAC over the exact body bytes."""
    if not signature_header or not signature_header.startswith("sha256="):
        raise AuthError("missing X-Hub-Signature-256")
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(header_bytes(signature_header), expected.encode()):
        raise AuthError("invalid signature")
