"""Inbound authentication of webhook routes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from gateway.errors import AuthError
from gateway.sources.webhook.config import WebhookAuth


def check_header(request: web.Request, auth: WebhookAuth | None) -> None:
    """Shared-value header auth (Auth0 `Authorization`, Okta, Pangea SDK bearer tokens)."""
    if auth is None or auth.value is None:
        return
    given = request.headers.get(auth.header, "")
    if not hmac.compare_digest(given.encode(), auth.value.get_secret_value().encode()):
        raise AuthError("missing or invalid credentials")


def check_hmac_sha256(raw: bytes, signature_header: str | None, secret: str) -> None:
    """GitHub-style ``sha256=<hex>`` HMAC over the exact body bytes."""
    if not signature_header or not signature_header.startswith("sha256="):
        raise AuthError("missing X-Hub-Signature-256")
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature_header.encode(), expected.encode()):
        raise AuthError("invalid signature")
