"""Inbound authentication of webhook routes, compared in constant time.

Shared header values, GitHub's body HMAC, and :class:`SignatureVerifier` for timestamped HMAC
signatures (Stripe, Slack, or described in the configuration) with a replay window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from gateway.dedup import DedupWindow, ns_key
from gateway.errors import AuthError
from gateway.sources.webhook.config import SignatureAuth, WebhookAuth


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


_DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
MAX_SEEN = 1_000_000
"""Most signatures remembered for the replay window (the oldest are forgotten first)."""


class SignatureVerifier:
    """Checks :class:`SignatureAuth` signatures: HMAC, timestamp tolerance, replays, rotation.

    A signature is *seen* once its request is accepted: :meth:`verify` reserves it (a concurrent
    replay is refused), :meth:`accepted` records it, and :meth:`release` gives it back when the
    request fails, so that the sender's retry of the same signed request is not taken for a
    replay.  Reservations are kept in memory until their timestamp leaves the tolerance; accepted
    signatures are also recorded in ``store`` (the gateway's dedup window, kept in the data dir)
    so that a restart does not reopen the window.  Without ``{timestamp}`` in ``signed`` there is
    no window, and no replay check.
    """

    def __init__(
        self,
        config: SignatureAuth,
        clock: Callable[[], float] = time.time,
        store: DedupWindow | None = None,
        namespace: str = "",
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.namespace = namespace
        self._digest = _DIGESTS[config.algorithm]
        self._keys = [s.get_secret_value().encode() for s in config.secrets if s.get_secret_value()]
        self._timed = "{timestamp}" in config.signed
        self._list = "," in config.format
        self._names: dict[str, str] = {}
        if self._list:
            for item in config.format.split(","):
                name, _, value = item.strip().partition("=")
                self._names[value] = name
            self._pattern = None
        else:
            parts = re.split(r"(\{timestamp\}|\{signature\})", config.format)
            regex = "".join(
                "(?P<timestamp>[0-9]+)" if p == "{timestamp}" else "(?P<signature>[^\\s,]+)" if p == "{signature}"
                else re.escape(p)
                for p in parts
            )  # fmt: skip
            self._pattern = re.compile(regex)
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def present(self, request: web.Request) -> None:
        """Refuse (401) a request without the signature header, before its body is read."""
        if not request.headers.get(self.config.header, "").strip():
            raise AuthError(f"missing {self.config.header}")

    def _parse(self, value: str) -> tuple[str | None, list[str]]:
        if self._pattern is None:
            pairs = [item.strip().partition("=") for item in value.split(",")]
            ts_name, sig_name = self._names.get("{timestamp}"), self._names["{signature}"]
            stamps = [v for k, eq, v in pairs if eq and k == ts_name]
            return (stamps[0] if stamps else None), [v for k, eq, v in pairs if eq and k == sig_name and v]
        m = self._pattern.fullmatch(value.strip())
        if m is None:
            return None, []
        got = m.groupdict()
        return got.get("timestamp"), [got["signature"]]

    def verify(self, request: web.Request, raw: bytes) -> bytes | None:
        """Check the request's signature over ``raw``; returns its replay key (see :meth:`release`)."""
        cfg = self.config
        timestamp, given = self._parse(request.headers.get(cfg.header, ""))
        if cfg.timestamp_header is not None:
            timestamp = request.headers.get(cfg.timestamp_header, "").strip() or None
        if not given:
            raise AuthError(f"malformed {cfg.header}")
        now = self.clock()
        self._forget(now)
        if self._timed:
            if timestamp is None or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
                raise AuthError("missing or malformed signature timestamp")
            if abs(now - int(timestamp)) > cfg.tolerance_secs:
                raise AuthError("signature timestamp outside the tolerance")
        head, _, tail = cfg.signed.partition("{body}")
        ts = timestamp or ""
        payload = head.replace("{timestamp}", ts).encode() + raw + tail.replace("{timestamp}", ts).encode()
        expected = [self._encode(hmac.new(k, payload, self._digest).digest()) for k in self._keys]
        if not any(hmac.compare_digest(header_bytes(g), e) for g in given for e in expected):
            raise AuthError("invalid signature")
        if not self._timed:
            return None
        # The key names the signed payload, not one secret's signature: a replay carrying only
        # the previous secret's signature is the same request.
        key = hashlib.sha256(payload).digest()
        if key in self._seen or (self.store is not None and self.store.seen(self._store_key(key))):
            raise AuthError("signature already used (replay)")
        self._seen[key] = int(ts) + cfg.tolerance_secs
        if len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        return key

    def _store_key(self, key: bytes) -> str:
        return ns_key(self.namespace, "signature:" + key.hex())

    def accepted(self, key: bytes) -> None:
        """Its request was accepted: remember the signature beyond a restart."""
        if self.store is not None:
            self.store.record(self._store_key(key))

    def release(self, key: bytes) -> None:
        """Forget a reserved signature: its request failed and the sender may retry it."""
        self._seen.pop(key, None)

    def _forget(self, now: float) -> None:
        # Insertion order is close to expiry order (senders stamp the current time).
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires >= now:
                break
            del self._seen[key]

    def _encode(self, digest: bytes) -> bytes:
        if self.config.encoding == "hex":
            return digest.hex().encode()
        return base64.b64encode(digest)
