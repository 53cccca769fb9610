"""Client-side ed25519 signing of events, exactly as pangea-sdk does with ``private_key_file``.

The SDK (``pangea/services/audit/audit.py`` ``AuditBase._process_log`` with ``sign_local=True``):

1. drops ``None`` members of the event;
2. replaces every top-level object value by its canonical JSON text;
3. signs the canonical JSON of the event (``json.dumps`` with ``ensure_ascii=False``,
   ``allow_nan=False``, ``separators=(",", ":")``, ``sort_keys=True``, UTF-8) with ed25519;
4. sends ``signature`` as standard base64 and ``public_key`` as the canonical JSON of
   ``{"algorithm": "ED25519", "key": <SubjectPublicKeyInfo PEM>, **public_key_info}``.

:class:`Signer` reproduces that byte for byte, so the SDK's own ``verify_signature`` accepts the
result.  Sign the *normalized* event: what is signed must be what is sent.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import ConfigError

__all__ = ["Signer", "canonical_event", "signature_verifies"]

_PUBLIC_KEY_MAX = 256  # AuditLogRequestV2.public_key maxLength


def _default(obj: Any) -> str:
    # The SDK's default_encoder: datetimes in its format_datetime spelling, anything else str().
    if isinstance(obj, datetime.datetime):
        dt = obj if obj.tzinfo is not None else obj.astimezone(datetime.UTC)
        return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return str(obj)


def _canonical_json(value: Any) -> str:
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True, default=_default
    )


def canonical_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as the SDK sends and signs it: ``None`` members dropped, object values as JSON text."""
    return {k: (_canonical_json(v) if isinstance(v, dict) else v) for k, v in event.items() if v is not None}


_KEY_CACHE_MAX = 256
_key_cache: dict[str, ed25519.Ed25519PublicKey | None] = {}
"""``public_key`` text -> its ed25519 key (None: not one this module can read); an app sends
the same key with every event, and parsing PEM costs more than verifying."""


def _public_key(public_key: str) -> ed25519.Ed25519PublicKey | None:
    """The ed25519 key a ``public_key`` value names, read as the SDK's ``Verifier`` reads it."""
    try:
        return _key_cache[public_key]
    except KeyError:
        pass
    text = public_key
    try:
        info = json.loads(public_key)
    except ValueError:
        info = None
    if isinstance(info, dict):
        if str(info.get("algorithm", "ED25519")).upper() != "ED25519" or not isinstance(info.get("key"), str):
            info = None
        else:
            text = info["key"]
    key: Any = None
    try:
        if text.startswith("----"):
            key = serialization.load_pem_public_key(text.encode("utf-8"))
        elif text.startswith("ssh-"):
            key = serialization.load_ssh_public_key(text.encode("utf-8"))
        else:
            # Older SDKs sent the raw key as base64 (the SDK verifies with its last 32 bytes).
            raw = base64.b64decode(text.encode("ascii"), validate=True)
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw[-32:])
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeEncodeError):
        key = None
    found = key if isinstance(key, ed25519.Ed25519PublicKey) else None
    if len(_key_cache) >= _KEY_CACHE_MAX:
        _key_cache.clear()
    _key_cache[public_key] = found
    return found


def signature_verifies(event: Mapping[str, Any], signature: Any, public_key: Any) -> bool | None:
    """Whether ``signature`` verifies over ``event`` as the SDK checks it (its canonical JSON).

    ``None`` when ``public_key`` is not an ed25519 key this module can read (an algorithm or
    key form it does not know): the caller cannot tell, and must not change the event.
    A signature that is not base64 of 64 bytes does not verify (``False``).
    """
    if not isinstance(public_key, str) or not isinstance(signature, str):
        return None
    key = _public_key(public_key)
    if key is None:
        return None
    try:
        sig = base64.b64decode(signature.encode("ascii"), validate=True)
        data = _canonical_json(event).encode("utf-8")
        key.verify(sig, data)
    except (InvalidSignature, ValueError, TypeError, UnicodeEncodeError):
        return False
    return True


class Signer:
    """Signs events with one ed25519 private key; immutable and shareable."""

    __slots__ = ("_key", "public_key")

    def __init__(
        self, private_key: ed25519.Ed25519PrivateKey, public_key_info: Mapping[str, str] | None = None
    ) -> None:
        """``public_key_info``: extra members of the ``public_key`` JSON, as the SDK's parameter of that name."""
        self._key = private_key
        pem = private_key.public_key().public_bytes(
            encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
        )
        info = dict(public_key_info or {})
        info["key"] = pem.decode("utf-8")
        info["algorithm"] = "ED25519"
        self.public_key: str = _canonical_json(info)
        """The ``public_key`` value sent with every signed event."""
        if len(self.public_key) > _PUBLIC_KEY_MAX:
            raise ValueError(f"public_key would be {len(self.public_key)} characters; the upstream allows 256")

    @classmethod
    def from_pem_file(cls, path: str | Path, public_key_info: Mapping[str, str] | None = None) -> Signer:
        """Load an unencrypted ed25519 private key in PEM (PKCS#8) or OpenSSH format, as the SDK does.

        Raises :class:`~gateway.errors.ConfigError` naming the file when it cannot be used.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read private key file: {exc.strerror or exc}", str(path)) from None
        key: Any = None
        for load in (serialization.load_pem_private_key, serialization.load_ssh_private_key):
            try:
                key = load(data, None)
                break
            except (ValueError, TypeError, UnsupportedAlgorithm):
                continue
        if key is None:
            raise ConfigError("not an unencrypted PEM or OpenSSH private key", str(path))
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"only ed25519 keys can sign events, not {type(key).__name__}", str(path))
        try:
            return cls(key, public_key_info)
        except ValueError as exc:
            raise ConfigError(str(exc), str(path)) from None

    def sign(self, event: Mapping[str, Any]) -> str:
        """Base64 ed25519 signature of the event's canonical JSON (``event`` as :func:`canonical_event` gives it)."""
        data = _canonical_json(event).encode("utf-8")
        return base64.b64encode(self._key.sign(data)).decode("ascii")

    def sign_item(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """One ``events[]`` element of a log request: ``{"event", "signature", "public_key"}``."""
        ev = canonical_event(event)
        return {"event": ev, "signature": self.sign(ev), "public_key": self.public_key}
