"""Who calls a ``format: pangea`` source, and what each caller may do (``callers:``, issue 14).

A caller is identified by its bearer token (compared in constant time against every caller's,
so timing tells nothing).  A ``token_file`` is re-read when it changes (a rotated Kubernetes
Secret), by the same :class:`~gateway.sinks.pangea.auth.TokenFile` the upstream token uses.
Its destinations decide the configuration of each call, as the
audit service decides it for its own service tokens:

* ``config_id`` given: it must be that of one of the caller's destinations, else
  ``403 MissingConfigIDScope``;
* none given: the caller's only destination, or ``400 AmbiguousConfigID`` when it has several.

Its endpoints limit what it may call (``403 Unauthorized`` otherwise), and its restrictions
the field values of the events it writes (``403 ForbiddenFieldValue``).  Events are validated
against the schema of the destination they go to (each admitter holds its destination).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gateway.errors import AmbiguousConfig, AuthError, ConfigError, ConfigScopeRefused, EndpointRefused, GatewayError
from gateway.sinks.pangea.auth import Credentials, StaticToken, TokenFile
from gateway.sources.intake import Admitter
from gateway.sources.webhook.auth import header_bytes
from gateway.sources.webhook.config import CallerConfig
from gateway.telemetry.metrics import Metrics

__all__ = ["ENDPOINT_GROUPS", "Caller", "Callers"]

ENDPOINT_GROUPS: Final[dict[str, str]] = {
    "/v1/log": "log",
    "/v2/log": "log",
    "/v2/log_async": "log",
    "/v1/search": "search",
    "/v1/results": "search",
    "/v1/download_results": "search",
    "/v1/root": "root",
    "/v1/export": "export",
    "/v1/schema": "schema",
    "/v1beta/config": "config",
    "/v1beta/config/list": "config",
    "/v1beta/config/create": "config",
    "/v1beta/config/update": "config",
    "/v1beta/config/delete": "config",
}
"""Route (without the source's prefix) -> the endpoint group a caller must be allowed."""


@dataclass(frozen=True, slots=True)
class Caller:
    """One configured caller, ready to serve."""

    index: int
    token: Credentials
    """Its ``Authorization`` value (``Bearer <token>``), from the configuration or its file."""
    admitters: tuple[Admitter, ...]
    """One per destination it may use (with its restrictions), in the order configured."""
    endpoints: frozenset[str] | None

    def check_endpoint(self, path: str) -> None:
        """403 Unauthorized unless the caller may call ``path``.  ``config`` (managing the
        configurations, with the gateway's own credential) must be listed explicitly: ``null``
        endpoints do not grant it."""
        group = ENDPOINT_GROUPS.get(path)
        if group is None:
            return
        if (self.endpoints is None and group == "config") or (
            self.endpoints is not None and group not in self.endpoints
        ):
            raise EndpointRefused(f"The token has no access to the {group} endpoints")

    def admitter(self, config_id: Any) -> Admitter:
        """The admitter of the destination a call addresses (see the module docstring)."""
        if config_id is None:
            if len(self.admitters) == 1:
                return self.admitters[0]
            raise AmbiguousConfig("The token is valid for several configurations; config_id is required")
        for adm in self.admitters:
            if config_id == adm.destination.config.config_id:
                return adm
        raise ConfigScopeRefused(f"The token has no access to configuration {config_id}")


class Callers:
    """The callers of one source; :meth:`identify` finds a request's."""

    def __init__(
        self,
        configs: list[CallerConfig],
        admitter: Callable[[str, dict[str, list[str]] | None], Admitter],
        metrics: Metrics | None = None,
    ) -> None:
        """``admitter(destination name, restrictions)`` builds the admitter of one destination."""
        self._callers: list[Caller] = []
        for i, c in enumerate(configs):
            token: Credentials
            if c.token is not None:
                token = StaticToken(c.token)
            else:
                assert c.token_file is not None
                _read_token(c.token_file, f"callers.{i}.token_file")  # fail at start, not on a call
                token = TokenFile(c.token_file, metrics)
            self._callers.append(
                Caller(
                    i,
                    token,
                    tuple(admitter(d, c.restrictions) for d in c.destinations),
                    frozenset(c.endpoints) if c.endpoints is not None else None,
                )
            )

    async def identify(self, request: web.Request) -> Caller:
        """The caller whose token the request's ``Authorization`` carries; 401 for none."""
        given = header_bytes(request.headers.get("Authorization", ""))
        found: Caller | None = None
        for caller in self._callers:  # every one compared: the time taken names none
            try:
                expected = (await caller.token.authorization()).encode()
            except GatewayError:  # its file vanished before it was ever read: no match
                continue
            if hmac.compare_digest(given, expected) and found is None:
                found = caller
        if found is None:
            raise AuthError("missing or invalid credentials")
        return found


def _read_token(path: Path, where: str) -> None:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file: {exc.strerror or exc}", where) from None
    if not token:
        raise ConfigError("the token file is empty", where)
