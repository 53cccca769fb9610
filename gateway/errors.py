"""The gateway's one error tree.

Every error the gateway raises on purpose derives from :class:`GatewayError`.  Whether
an operation may be retried is an attribute (``retriable``), never a second hierarchy::

    GatewayError (retriable=False)
    ├── ConfigError                 invalid configuration; names the key path
    ├── IntakeError                 a request a source refuses (has an HTTP status and Pangea status)
    │   ├── AuthError               401 Unauthorized: missing or wrong inbound credentials
    │   ├── ValidationFailed        400 ValidationError: carries Pangea-style ``errors``
    │   ├── ForbiddenFieldValue     403: a field value the route's restrictions forbid
    │   ├── PayloadTooLarge         413: body over ``max_body_bytes``
    │   └── BufferFull              429 TooManyRequests (retriable): the buffer pushes back
    ├── UpstreamError               the upstream audit log failed a call
    │   ├── RetriableUpstreamError  (retriable=True) 408, 429, 5xx but 501, network errors
    │   ├── RejectedUpstreamError   other 4xx: the events go to the dead-letter path
    │   └── UpstreamConfigError     AmbiguousConfigID / MissingConfigID / Unauthorized: fix the config
    ├── PollError                   (retriable=True) a pull source's page not got or not usable; has a
    │                               metric ``reason`` (gateway.sources.poll.source)
    └── ShutdownError               (retriable=True) the process is draining; try again elsewhere
"""

from __future__ import annotations

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


class ForbiddenFieldValue(IntakeError):
    http_status = 403
    pangea_status = "ForbiddenFieldValue"


class PayloadTooLarge(IntakeError):
    http_status = 413
    pangea_status = "ValidationError"


class BufferFull(IntakeError):
    http_status = 429
    pangea_status = "TooManyRequests"
    retriable = True


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
    """The upstream says our configuration is wrong (ambiguous/missing config id, bad token)."""

    retriable = False


class ShutdownError(GatewayError):
    retriable = True
