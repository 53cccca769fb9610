"""Redaction of configured secrets from text that leaves the process (log lines, ``/readyz``).

The gateway never puts a secret in a message on purpose (secrets are ``SecretStr``); this is the
net under that rule for text it does not write itself, like a token endpoint echoing its request
into an error.  Every secret the gateway is given is registered here: the configuration's
``SecretStr`` values (:func:`register_config`), the OAuth2 client's Basic-auth value
``base64(client_id:client_secret)``, and credentials obtained at run time (a token file's token,
an OAuth2 access token).  :func:`redact` replaces each occurrence with ``***``.
"""

from __future__ import annotations

import base64
import re
import threading
from typing import Any

import orjson
from pydantic import BaseModel, SecretStr

__all__ = ["MASK", "basic_credentials", "redact", "register", "register_config"]

MASK = "***"
_MIN_CHARS = 4
"""Shorter values are not redacted: masking every "abc" in every log line would hide more than it protects."""

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def basic_credentials(user: str, password: str) -> str:
    """The HTTP Basic value ``base64(user:password)`` (the one place it is built)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def register(*values: str | SecretStr | None) -> None:
    """Treat ``values`` as secrets from now on (also in their JSON-escaped spelling)."""
    global _pattern
    added = False
    with _lock:
        for v in values:
            text = v.get_secret_value() if isinstance(v, SecretStr) else v
            if not text or len(text) < _MIN_CHARS:
                continue
            # A JSON log line escapes quotes, backslashes and control characters.
            for form in (text, orjson.dumps(text).decode()[1:-1]):
                if form not in _secrets:
                    _secrets.add(form)
                    added = True
        if added:
            # Longest first, so a secret containing another is masked whole.
            alternatives = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(map(re.escape, alternatives)))


def register_config(config: Any) -> None:
    """Register every ``SecretStr`` in a configuration model (recursively), and the Basic-auth
    value of each OAuth2 client (a model with ``client_id`` and ``client_secret``)."""
    seen: set[int] = set()

    def walk(value: Any) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, SecretStr):
            register(value)
        elif isinstance(value, BaseModel):
            secret = getattr(value, "client_secret", None)
            client_id = getattr(value, "client_id", None)
            if isinstance(secret, SecretStr) and isinstance(client_id, str):
                register(basic_credentials(client_id, secret.get_secret_value()))
            for name in type(value).model_fields:
                walk(getattr(value, name, None))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple | set | frozenset):
            for v in value:
                walk(v)

    walk(config)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _pattern
    if pattern is None:
        return text
    return pattern.sub(MASK, text)
