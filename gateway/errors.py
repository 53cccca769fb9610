"""The gateway's one error tree.

Every error the gateway raises on purpose derives from :class:`GatewayError`.  Whether
an operation may be retried is an attribute (``retriable``), never a second hierarchy::

    GatewayError (retriable=False)
    ├── ConfigError                 invalid configuration; names the key path
    ├── StartupError                the process cannot start: a port taken, a file it cannot read, a
    │                               directory it cannot write; names what and where (exit code 1)
    ├── IntakeError                 a request a source refuses (has an HTTP status and Pangea status)
    │   ├── AuthError               401 Unauthorized: missing or wrong inbound credentials
    │   ├── ValidationFailed        400 ValidationError: carries Pangea-style ``errors``
    │   ├── ConfigScopeRefused      403 MissingConfigIDScope: a config_id the caller may not use
    │   ├── AmbiguousConfig         400 AmbiguousConfigID: no config_id, and the caller may use several
    │   ├── EndpointRefused         403 Unauthorized: an endpoint the caller's token may not call
    │   ├── PayloadTooLarge         413: body over ``max_body_bytes``
    │   ├── RequestTimeout          408: the body did not arrive in time (sources/webhook/body)
    │   ├── BodyIncomplete          400: the body stopped before its end (sources/webhook/body)
    │   └── BufferFull              429 TooManyRequests (retriable): the buffer pushes back
    │       ├── GatewayUnavailable  503 ServiceNotAvailable: full because of the gateway's own fault
    │       │   └── SpoolUnavailable 503: the spool cannot write, a Kafka buffer's brokers do not ack (buffer/disk)
    │       └── Draining            503 ServiceNotAvailable (retriable): the buffer is closed, the gateway stopping
    ├── DecodeError                 a body that cannot be split into records (normalize/vendors)
    ├── EventInvalid                an event its schema refuses; carries ``errors`` (normalize/schema)
    ├── SpoolError                  a spool write failed, nothing of it durable (buffer/spool)
    ├── DeadLetterWriteError        dead letters could not be recorded (sinks/deadletter/local)
    ├── UpstreamError               the upstream audit log failed a call
    │   ├── RetriableUpstreamError  (retriable=True) 408, 429, 5xx but 501, network errors
    │   │   └── PollGaveUp          polling a 202 ended without a result (delivery/poll)
    │   ├── RejectedUpstreamError   other 4xx: the events go to the dead-letter path
    │   ├── UpstreamConfigError     AmbiguousConfigID / MissingConfigID: fix the config
    │   └── UpstreamCredentialsRefused  (retriable=True) the upstream or its token endpoint refuses
    │                               the gateway's own credential: events wait for a working one
    ├── ReplayFailed                a dead letter the current configuration cannot replay (deadletter_cli)
    ├── ApiError                    the embedded local audit log's error answer (local_audit/server)
    ├── QueryError                  also a ValueError: a search query it cannot parse (local_audit/query)
    ├── PollError                   (retriable=True) a pull source's page not got or not usable; has a
    │                               metric ``reason`` (gateway.sources.poll.source)
    └── ShutdownError               (retriable=True) the process is draining; try again elsewhere

Classes defined beside the code that raises them are listed with their module; private
control-flow exceptions (``_FieldError``) derive from it too.  ``tests/unit/core/test_error_tree.py``
checks that every exception class of the package is here and derives from ``GatewayError``.
"""

from __future__ import annotations

import os
from typing import Any


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class ConfigError(GatewayError):
    """The configuration is invalid; ``path`` names the offending key (``sources.auth0.path``)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class StartupError(GatewayError):
    """What the configuration names cannot be used on this machine: ``cannot listen on
    127.0.0.1:8080: address already in use``, a file that is missing, a directory not writable."""


class IntakeError(GatewayError):
    """A request refused at intake; rendered as a Pangea envelope with ``http_status``."""

    http_status = 400
    pangea_status = "ValidationError"

    def __init__(
        self,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after_secs: float | None = None,
    ) -> None:
        super().__init__(message)
        self.errors = errors or []
        self.retry_after_secs = retry_after_secs


class AuthError(IntakeError):
    http_status = 401
    pangea_status = "Unauthorized"


class ValidationFailed(IntakeError):
    http_status = 400
    pangea_status = "ValidationError"


class ConfigScopeRefused(IntakeError):
    """A ``config_id`` the caller may not use: 403 MissingConfigIDScope, as the audit service answers."""

    http_status = 403
    pangea_status = "MissingConfigIDScope"


class AmbiguousConfig(IntakeError):
    """No ``config_id`` from a caller who may use several configurations: 400 AmbiguousConfigID."""

    http_status = 400
    pangea_status = "AmbiguousConfigID"


class EndpointRefused(IntakeError):
    """An endpoint the caller may not call: 403 Unauthorized, as the audit service answers its tokens."""

    http_status = 403
    pangea_status = "Unauthorized"


class PayloadTooLarge(IntakeError):
    http_status = 413
    pangea_status = "ValidationError"


class BufferFull(IntakeError):
    http_status = 429
    pangea_status = "TooManyRequests"
    retriable = True


class GatewayUnavailable(BufferFull):
    """The buffer is full because the gateway cannot deliver for a fault of its own (the upstream
    refuses its credential): 503 + Retry-After, as the sender did nothing wrong to be slowed for."""

    http_status = 503
    pangea_status = "ServiceNotAvailable"


class Draining(BufferFull):
    """The gateway is stopping and takes nothing more: a 503 every sender retries (on another replica)."""

    http_status = 503
    pangea_status = "ServiceNotAvailable"


class UpstreamError(GatewayError):
    """A failed call to the upstream audit log."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        pangea_status: str | None = None,
        retry_after_secs: float | None = None,
        body: dict[str, Any] | None = None,
        retriable: bool | None = None,
    ) -> None:
        super().__init__(message, retriable=retriable)
        self.http_status = http_status
        self.pangea_status = pangea_status
        self.retry_after_secs = retry_after_secs
        self.body = body


class RetriableUpstreamError(UpstreamError):
    retriable = True


class RejectedUpstreamError(UpstreamError):
    retriable = False


class UpstreamConfigError(UpstreamError):
    """The upstream says our configuration is wrong (ambiguous or missing config id, bad URL)."""

    retriable = False


class UpstreamCredentialsRefused(UpstreamError):
    """The gateway's own credential does not work: the upstream answered 401/403 to it (after one
    refresh), or the token endpoint refused the OAuth2 client, or the token file is unusable.

    The gateway's fault, never the sender's: events stay queued and are retried with backoff
    until the credential works, and readiness reports it.  The message carries HTTP statuses and
    error codes only, never text from the upstream or the token endpoint.
    """

    retriable = True


class ShutdownError(GatewayError):
    retriable = True


def os_reason(exc: OSError) -> str:
    """``address already in use``, ``no such file or directory``: the errno's text, lower case."""
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__
